"""The API client: in-cluster service account, or the kubeconfig named in the settings.

Each collector gets its own `ApiClient` built from its own `Configuration`: the kubernetes
package's module-level default configuration is never touched, so two collectors (or a test and
the product) cannot leak settings into each other.
"""

from __future__ import annotations

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from exporter.settings import KubernetesSettings

# Three background threads (pods, nodes, metrics poller) each hold one connection.
_POOL_SIZE = 4


class KubernetesConfigError(Exception):
    """No usable cluster configuration, worded for the operator."""


def create_api_client(settings: KubernetesSettings) -> client.ApiClient:
    configuration = client.Configuration()
    if settings.kubeconfig:
        try:
            config.load_kube_config(config_file=settings.kubeconfig,
                                    client_configuration=configuration, persist_config=False)
        except (ConfigException, OSError, ValueError) as error:
            raise KubernetesConfigError(
                f"exporter.kubernetes.kubeconfig: cannot load {settings.kubeconfig!r}: {error}"
            ) from error
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException as error:
            raise KubernetesConfigError(
                "exporter.kubernetes: not running in a pod (no service account) and "
                f"exporter.kubernetes.kubeconfig is not set: {error}"
            ) from error
    configuration.connection_pool_maxsize = _POOL_SIZE
    return client.ApiClient(configuration)
