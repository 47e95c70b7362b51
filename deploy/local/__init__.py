"""The local stack: MongoDB, the services and the Envoy gateway as processes on 127.0.0.1.

`python -m deploy.local.launcher run|up|down|status` (what `make run`, `make up` and
`make down` call). `registry.py` lists the processes; add one entry there to run a new one.
"""
