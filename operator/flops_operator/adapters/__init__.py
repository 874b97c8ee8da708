"""Front doors that call the one reconcile step: kopf handlers (cluster) and `flops run` (local)."""
