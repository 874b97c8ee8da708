"""The tracking server's entrypoint: MLflow's basic-auth app, its users and permissions set up first."""
