"""The image builder: a task source (Git or a folder) to learner and aggregator images, or (locally) to a cached environment."""
