"""ApiVersions (key 18), v0-3. v3 is flexible; an unknown version is answered in v0 format.

Skipped: the v3 tagged fields (supported and finalized features).
"""

from __future__ import annotations

from ..schema import INT16, INT32, STRING, Api, array, f, message


@message
class ApiVersionsRequest:
    client_software_name: str = f(STRING, since=3)
    client_software_version: str = f(STRING, since=3)


@message
class ApiVersion:
    api_key: int = f(INT16)
    min_version: int = f(INT16)
    max_version: int = f(INT16)


@message
class ApiVersionsResponse:
    error_code: int = f(INT16)
    api_keys: list[ApiVersion] = f(array(ApiVersion))
    throttle_time_ms: int = f(INT32, since=1)


API = Api(18, "ApiVersions", ApiVersionsRequest, ApiVersionsResponse, 0, 3, flexible_from=3)
