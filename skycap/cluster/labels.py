"""Every label and annotation Skycap writes or reads, in one place."""

# Stamped on every object a stage renders (skycap.project.render): how Skycap finds its own objects.
MANAGED_BY = "app.kubernetes.io/managed-by"
STAGE_LABEL = "skycap.io/stage"
SERVICE_LABEL = "skycap.io/service"
RELEASE_ANNOTATION = "skycap.io/release"
NODE_ANNOTATION = "skycap.io/node"
CONFIG_HASH_ANNOTATION = "skycap.io/config-hash"
# An object a user annotates skycap.io/prune: "false" is never pruned.
PRUNE_ANNOTATION = "skycap.io/prune"

# The release ledger's Secrets (skycap.cluster.ledger).
RELEASE_LABEL = "skycap.io/release"
STATUS_LABEL = "skycap.io/status"
PART_LABEL = "skycap.io/release-part"
PARTS_ANNOTATION = "skycap.io/manifest-parts"
DIGEST_ANNOTATION = "skycap.io/manifest-sha256"

# The stage lock's Lease (skycap.cluster.lock).
PURPOSE_ANNOTATION = "skycap.io/purpose"
SINCE_ANNOTATION = "skycap.io/since"
TOKEN_ANNOTATION = "skycap.io/lock-token"  # tells two holders with the same user@host:pid apart

# An environment's namespace and definition (skycap.environments).
ENVIRONMENT_LABEL = "skycap.io/environment"
SOURCE_LABEL = "skycap.io/source-stage"
SOURCE_NAMESPACE_LABEL = "skycap.io/source-namespace"

# Kubernetes' and kubectl's own, which Skycap reads or writes as they do.
DEPLOYMENT_REVISION = "deployment.kubernetes.io/revision"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # kubectl's own: the same restart, whoever asks
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # an EndpointSlice's Service
