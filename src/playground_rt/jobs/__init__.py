"""How a request becomes a job: intake, the manager, the executor, the cluster."""
