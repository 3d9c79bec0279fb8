"""The application state machine: commands -> events -> one LSM write batch each.

`StateMachine(store).apply(index, command_bytes) -> result_bytes` on every replica, in log
order; `query(query_bytes, snapshot=None) -> result_bytes` for reads. Build commands with
`make_command(body, tenant_id=..., client_id=..., request_seq=...)` + `encode_command`, and
queries with `encode_query(tenant_id, body)`; read results with `decode_result`.
"""

from mox.statemachine.commands import (
    ArchiveTalent,
    Command,
    CreateTenant,
    GetApiKey,
    GetTalent,
    GetTenant,
    IssueApiKey,
    ListEvents,
    ListTalents,
    LocationIn,
    MalformedError,
    NewApiKey,
    Query,
    RegisterTalent,
    Result,
    RevokeApiKey,
    SocialAccountIn,
    TalentPage,
    TenantCreated,
    UpdateProfile,
    decode_command,
    decode_query,
    decode_result,
    encode_command,
    encode_query,
    make_command,
)
from mox.statemachine.machine import ApiKeyInfo, StateMachine, StateStore
from mox.statemachine.model import ApiKey, Event, Talent, Tenant, TenantSettings

__all__ = [
    "ApiKey",
    "ApiKeyInfo",
    "ArchiveTalent",
    "Command",
    "CreateTenant",
    "Event",
    "GetApiKey",
    "GetTalent",
    "GetTenant",
    "IssueApiKey",
    "ListEvents",
    "ListTalents",
    "LocationIn",
    "MalformedError",
    "NewApiKey",
    "Query",
    "RegisterTalent",
    "Result",
    "RevokeApiKey",
    "SocialAccountIn",
    "StateMachine",
    "StateStore",
    "Talent",
    "TalentPage",
    "Tenant",
    "TenantCreated",
    "TenantSettings",
    "UpdateProfile",
    "decode_command",
    "decode_query",
    "decode_result",
    "encode_command",
    "encode_query",
    "make_command",
]
