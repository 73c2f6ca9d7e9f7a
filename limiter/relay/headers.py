"""Which headers cross the gateway, in each direction: the one home of these lists.

Towards the provider: the client's headers minus those that describe its connection (RFC 9110
§7.6.1, plus any its `Connection` header names), the body's framing (aiohttp frames the body it
sends), the credentials the gateway reads (the provider gets the upstream's own key), headers that
choose who is billed upstream (an upstream may set those in its settings), cookies, and the
gateway's own chat header. Back to the client: the provider's headers minus the same
connection headers (and those its `Connection` header names), the framing and encoding of a body
aiohttp has decompressed and re-frames, the provider's server stamps and its cookies.
"""

from __future__ import annotations

from multidict import CIMultiDict, MultiMapping

from limiter.admission.credentials import CREDENTIAL_HEADERS

# Headers that describe one connection, not the message (RFC 9110 §7.6.1).
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade", "host",
})
# How a body is framed and encoded on one hop; each side's HTTP stack sets its own.
FRAMING = frozenset({"content-length", "content-encoding", "transfer-encoding"})
# Headers that pick the organisation, project or account a provider bills, or carry a key of
# the provider's own: a caller must not choose what the gateway's key pays for.
BILLING = frozenset({"openai-organization", "openai-project", "api-key"})
BILLING_PREFIXES = ("anthropic-admin-",)
# The limiter's own or the client's session: never sent on. Accept-Encoding is the upstream
# client's (it decompresses what it asks for); Content-Type is set for the body actually sent.
CLIENT_ONLY = frozenset({"x-chat-id", "cookie", "accept-encoding", "content-type"})
_NOT_FORWARDED = HOP_BY_HOP | FRAMING | BILLING | CLIENT_ONLY | CREDENTIAL_HEADERS
# The provider's own stamps and cookies, not relayed.
_NOT_RELAYED = HOP_BY_HOP | FRAMING | {"date", "server", "set-cookie"}


def _named_by_connection(headers: MultiMapping[str]) -> set[str]:
    return {name.strip().lower() for value in headers.getall("Connection", ())
            for name in value.split(",")}


def forwardable_headers(incoming: MultiMapping[str]) -> CIMultiDict[str]:
    """The client's headers that may travel upstream (see the module doc)."""
    dropped = _NOT_FORWARDED | _named_by_connection(incoming)
    return CIMultiDict((name, value) for name, value in incoming.items()
                       if name.lower() not in dropped
                       and not name.lower().startswith(BILLING_PREFIXES))


def relayable_headers(upstream: MultiMapping[str]) -> CIMultiDict[str]:
    """The upstream answer's headers that are sent on to the client (repeated ones kept)."""
    dropped = _NOT_RELAYED | _named_by_connection(upstream)
    return CIMultiDict((name, value) for name, value in upstream.items()
                       if name.lower() not in dropped)
