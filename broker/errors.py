"""The root of every error the broker's own code raises.

Callers keep catching the specific classes; the root lets a boundary (a command, a servicer)
tell the broker's own, expected errors from bugs. The tree::

    BrokerError
    ├── PolicyError            broker.yamlfile: a policy, catalog or tokens file is invalid
    ├── ConfigFileError        broker.config: broker.yaml is invalid
    ├── ListenError            broker.listen: a port (gRPC, agent endpoint, /metrics) cannot be bound
    ├── TlsFileError           broker.tls
    ├── JobFileError           broker.jobfile: a job YAML is invalid
    ├── StoreError             broker.store (JobNotFoundError ...)
    ├── AuthError              broker.auth: no or a wrong token
    ├── QuotaExceededError     broker.quota
    ├── IllegalTransitionError broker.states
    ├── AgentAuthError, AgentReportError, PermissionDeniedError      broker.service
    ├── NotPlaceableError, PriorityNotGrantedError     broker.submit
    ├── WireValueError (also a ValueError)             broker.serde_wire (re-exported by broker.serde)
    ├── BadReportError, BadHashError (also ValueErrors) broker.agent_http, broker.audit
    ├── ClientError            broker.client: what the server answered
    ├── BadRequestError        broker.validation: becomes INVALID_ARGUMENT with field violations
    ├── UsageError             broker.commands._args: wrong arguments (exit 2, in broker.cli)
    ├── _Stop                  broker.wire_text: internal, never leaves it
    ├── ReplayError, TraceError, ScenarioError         broker.sim
    └── AdapterError           adapters.base: a backend's error, classified by kind
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base of the broker's own exceptions (never raised itself)."""
