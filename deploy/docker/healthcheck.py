"""The images' health check: a service is healthy when its GET /healthz answers; a worker
(a module other than `<service>_service`) when it reaches MongoDB, where its jobs are."""
import os
import sys
import urllib.request

module = os.environ.get("MLSTUDIO_MODULE", "")
try:
    if module.endswith("_service"):
        urllib.request.urlopen("http://127.0.0.1:%s/healthz" % os.environ.get("HTTP_PORT", "8080"), timeout=8)
    else:
        import pymongo

        pymongo.MongoClient(os.environ["MONGO_URI"], serverSelectionTimeoutMS=5000).admin.command("ping")
except Exception as exc:  # any failure is "unhealthy"; the reason goes to `docker inspect`
    print(f"unhealthy: {exc}", file=sys.stderr)
    sys.exit(1)
