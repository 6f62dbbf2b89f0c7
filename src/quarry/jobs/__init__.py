"""Background jobs on Procrastinate, in the same Postgres as everything else."""
