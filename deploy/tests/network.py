"""Evaluates Kubernetes NetworkPolicies the way the API defines them, for the tests: may a
connection from one endpoint reach another on a port?

An endpoint is a pod (its labels and its namespace's labels) or `OUTSIDE` (a client outside the
cluster). Traffic is allowed when the source's egress and the destination's ingress both allow
it; a direction that no policy selecting the pod restricts is open. `ipBlock` peers stand for
addresses outside the cluster. Named ports are not supported (the manifests use numbers).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping


@dataclasses.dataclass(frozen=True)
class Endpoint:
    name: str
    labels: Mapping[str, str] | None  # None: outside the cluster
    namespace_labels: Mapping[str, str] | None


OUTSIDE = Endpoint("outside", None, None)


def selects(selector: Mapping | None, labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) selects `labels`; {} selects all."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _peer_matches(peer: Mapping, endpoint: Endpoint, policy_namespace_labels: Mapping[str, str]) -> bool:
    if "ipBlock" in peer:
        return endpoint.labels is None
    if endpoint.labels is None:
        return False
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], endpoint.namespace_labels or {})
    else:
        in_namespace = endpoint.namespace_labels == policy_namespace_labels
    return in_namespace and selects(peer.get("podSelector"), endpoint.labels)


def _port_matches(ports: Iterable[Mapping] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for entry in ports:
        if not isinstance(entry.get("port", 0), int):
            raise ValueError(f"named ports are not supported: {entry}")
        if entry.get("protocol", "TCP") == protocol and entry.get("port") in (None, port):
            return True
    return False


def policy_types(policy: Mapping) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return spec["policyTypes"]
    return ["Ingress"] + (["Egress"] if "egress" in spec else [])


def selecting(policies: Iterable[Mapping], pod: Endpoint, direction: str) -> list[Mapping]:
    """The policies that select `pod` and restrict `direction` (Ingress or Egress)."""
    if pod.labels is None:
        return []
    return [p for p in policies if direction in policy_types(p) and selects(p["spec"].get("podSelector"), pod.labels)]


def _direction_allows(policies, pod: Endpoint, peer: Endpoint, port: int, protocol: str, direction: str,
                      namespace_labels: Mapping[str, str]) -> bool:
    if pod.namespace_labels != namespace_labels:
        return True  # a pod of another namespace: these policies do not govern it
    restricting = selecting(policies, pod, direction)
    if not restricting:
        return True
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in restricting:
        for rule in policy["spec"].get(rules_key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(p, peer, namespace_labels) for p in peers)) \
                    and _port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def allowed(policies: list[Mapping], source: Endpoint, destination: Endpoint, port: int, *,
            namespace_labels: Mapping[str, str], protocol: str = "TCP") -> bool:
    """Whether `source` may open a connection to `destination`:`port`. All policies are in the
    namespace whose labels are `namespace_labels`."""
    return (_direction_allows(policies, source, destination, port, protocol, "Egress", namespace_labels)
            and _direction_allows(policies, destination, source, port, protocol, "Ingress", namespace_labels))
