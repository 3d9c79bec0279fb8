"""Python clients of the Mox REST API. See docs/api.md."""

from mox.client.client import (
    ApiKeyCreated,
    MoxApiError,
    MoxClient,
    SyncMoxClient,
    TalentPage,
    TenantCreated,
)

__all__ = [
    "ApiKeyCreated",
    "MoxApiError",
    "MoxClient",
    "SyncMoxClient",
    "TalentPage",
    "TenantCreated",
]
