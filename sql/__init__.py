"""SQL migrations for rig, applied in file-name order by `rig migrate` (see rig/migrations.py)."""
