#!/usr/bin/env python3
"""Writes the `polc diff` benchmark of BENCHMARKS.md into DIR: 1,000 pods
(10 namespaces x 100 pods, 30 label combinations per namespace) and two
versions of one NetworkPolicy per namespace (db pods accept api pods on
5432, then on 5432-5440).

    python3 scripts/diff-bench.py /tmp/diff-bench
"""
import json
import os
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/diff-bench"
os.makedirs(out, exist_ok=True)
pods = []
for n in range(10):
    for i in range(100):
        pods.append({
            "kind": "Pod",
            "metadata": {"name": f"p{i}", "namespace": f"ns{n}",
                         "labels": {"app": f"app{i % 10}", "tier": ["web", "api", "db"][i % 3]}},
            "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080, "name": "http"}]}]},
            "status": {"podIP": f"10.{n + 10}.0.{i + 1}"},
        })
with open(os.path.join(out, "pods.json"), "w") as f:
    json.dump({"kind": "List", "items": pods}, f)


def policies(ports):
    return "\n---\n".join(f"""apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web, namespace: ns{n}}}
spec:
  podSelector: {{matchLabels: {{tier: db}}}}
  ingress:
  - from:
    - podSelector: {{matchLabels: {{tier: api}}}}
    ports: [{ports}]
  - from:
    - ipBlock: {{cidr: 192.0.2.0/24}}
""" for n in range(10))


with open(os.path.join(out, "old.yaml"), "w") as f:
    f.write(policies("{port: 5432}"))
with open(os.path.join(out, "new.yaml"), "w") as f:
    f.write(policies("{port: 5432, endPort: 5440}"))
