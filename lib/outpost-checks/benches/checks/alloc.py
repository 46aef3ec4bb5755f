# The allocation-heavy workload of the memory-tracking benchmarks (outpost-checks and
# outpost-agent): nothing but allocations.
from datadog_checks.base import AgentCheck

class AllocCheck(AgentCheck):
    def check(self, instance):
        data = [{"key": str(i), "values": [i, i + 1, float(i)], "name": "item-%d" % i} for i in range(20000)]
        index = {d["key"]: d for d in data}
        total = sum(len(d["name"]) for d in index.values())
        self.gauge("alloc.total", total)
