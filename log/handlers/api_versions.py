"""ApiVersions (key 18), v0-3: the APIs this broker serves and their version ranges.

A version above 3 is answered in the v0 body format with UNSUPPORTED_VERSION and the full
list (KIP-511), so a client that starts high (kafka-python sends v4, librdkafka v3) can
read the answer and retry at a version both sides know.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol.apis import API_VERSIONS_KEY, APIS, encode_response
from ..protocol.error_codes import ErrorCode
from ..protocol.messages.api_versions import ApiVersion, ApiVersionsRequest, ApiVersionsResponse

if TYPE_CHECKING:
    from ..broker import Broker
    from ..server import RequestContext


def served_versions() -> list[ApiVersion]:
    from . import HANDLERS  # the handlers registry imports this module

    return [
        ApiVersion(api_key=api.key, min_version=api.min_version, max_version=api.max_version)
        for api in APIS.values()
        if api.key in HANDLERS
    ]


async def handle(
    broker: Broker, context: RequestContext, request: ApiVersionsRequest
) -> ApiVersionsResponse:
    return ApiVersionsResponse(error_code=ErrorCode.NONE, api_keys=served_versions())


def unsupported_version_response(correlation_id: int) -> bytes:
    body = ApiVersionsResponse(error_code=ErrorCode.UNSUPPORTED_VERSION, api_keys=served_versions())
    return encode_response(APIS[API_VERSIONS_KEY], 0, correlation_id, body)
