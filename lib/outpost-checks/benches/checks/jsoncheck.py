# The JSON-parsing workload of the memory-tracking benchmarks (outpost-checks and
# outpost-agent).
import json
from datadog_checks.base import AgentCheck

# A status payload like those HTTP checks fetch: 2000 services with nested details.
PAYLOAD = json.dumps({"services": [
    {"name": "svc-%d" % i, "status": "up" if i % 7 else "down", "latency_ms": i * 0.37,
     "tags": ["zone:z%d" % (i % 5), "tier:%s" % ("web" if i % 2 else "db")],
     "counters": {"requests": i * 11, "errors": i % 13, "bytes_in": i * 1024, "bytes_out": i * 2048}}
    for i in range(2000)]})

class JsonCheck(AgentCheck):
    def check(self, instance):
        doc = json.loads(PAYLOAD)
        up = 0
        for svc in doc["services"]:
            if svc["status"] == "up":
                up += 1
            if svc["counters"]["errors"] == 0:
                self.gauge("svc.latency", svc["latency_ms"], tags=svc["tags"] + ["service_name:" + svc["name"]])
        self.gauge("svc.up", up)
