"""CDK infrastructure for the edge anomaly platform: one Stack per deployable component (``infra.stacks``),
one Construct per logical unit (``infra.parts``), one frozen settings object (``infra.config``)."""
