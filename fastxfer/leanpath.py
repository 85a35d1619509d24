"""The lean request path: PutObject, UploadPart, GetObject and HeadObject without
botocore's per-call pipeline.

Measured on a 64 KiB PutObject against rclone serve s3 on loopback, botocore's
path costs ~0.73 ms of client CPU a request (parameter validation and
serialisation, the endpoint rules, a dozen event emissions, header objects
built and copied twice, signing, response parsing); the same request signed
with awscrt and sent over the same aiohttp session costs ~0.24 ms.  For
2,000 small files that is most of the client's CPU.

What botocore gives is kept, by asking botocore for it rather than
re-implementing it:

* endpoint and addressing rules: the URL, the signing region and the signing
  name come from the client's own endpoint ruleset, resolved once per
  (operation, bucket); anything but plain SigV4 with no extra headers (S3
  Express, SigV4a, access point ARNs with their own auth), a proxy, or an
  anonymous client keeps that bucket on botocore's path;
* serialisation: the operation's input shape says where each parameter goes
  (header, prefixed header map, query string); a parameter that botocore would
  transform first (SSE-C keys, timestamps, flexible checksums botocore would
  compute, non-ASCII metadata that botocore refuses) sends the whole call down
  botocore's path instead;
* retries and their classification: after a failed attempt the client's
  ``needs-retry`` event is emitted exactly as botocore's endpoint does, so
  botocore's standard retry handler (classification, max attempts, back-off,
  retry quota) and fastxfer's own handler decide; the quota taken by retries
  is given back through ``after-call`` when the request then succeeds;
* error translation: an error answer is parsed by the client's own response
  parser and raised as the client's own exception class;
* credentials: asked of the client's credential object for every request
  (refreshable credentials refresh there);
* checksums: fastxfer sends its own checksum headers; a GET with
  ``ChecksumMode`` gets botocore's response-checksum handling.

``TransferConfig.lean_path`` (``FASTXFER_LEAN_PATH=0``) turns it off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

log = logging.getLogger("fastxfer.request")
"""``-v`` shows this path's requests here (botocore's own go to botocore.endpoint)."""

LEAN_OPS: Final[Mapping[str, str]] = {
    "put_object": "PutObject",
    "upload_part": "UploadPart",
    "get_object": "GetObject",
    "head_object": "HeadObject",
}
"""Client method name -> S3 operation name, for the operations that take this path."""

_TRANSFORMED: Final = frozenset(
    {
        # botocore handlers rewrite these before sending (base64 of the key, its MD5).
        "SSECustomerKey",
        "SSECustomerKeyMD5",
        "SSECustomerAlgorithm",
        "CopySourceSSECustomerKey",
        "CopySourceSSECustomerKeyMD5",
        "CopySourceSSECustomerAlgorithm",
    }
)


@dataclass(frozen=True, slots=True)
class _Member:
    location: str
    """``header``, ``headers`` (a prefixed map) or ``querystring``."""
    wire: str
    """Header name, header prefix or query parameter."""
    kind: str
    """``string``, ``integer``, ``long``, ``boolean`` or ``map``."""


@dataclass(frozen=True, slots=True)
class _Endpoint:
    origin: str
    """``scheme://host[:port]`` as botocore's rules gave it."""
    path: str
    """The path the key is appended to (``/bucket`` path-style, empty virtual-hosted)."""
    host: str
    region: str
    service: str


@dataclass(frozen=True, slots=True)
class _OutputTable:
    """How botocore's rest-xml parser reads one operation's answer headers."""

    headers: Mapping[str, tuple[str, str]]
    """Lower-case header -> (member, type) for the members read as they come."""
    complex: frozenset[str]
    """Headers of members the lean parser leaves to botocore (lists, JSON values,
    ``expires``, which a botocore handler rewrites before parsing)."""
    map_member: str | None
    map_prefix: str
    payload: str | None
    botocore_only: bool
    """The output has a member the lean parser never reads (a status code)."""

    @classmethod
    def of(cls, op_model: Any) -> _OutputTable:
        headers: dict[str, tuple[str, str]] = {}
        complex_: set[str] = {"expires"}
        map_member, map_prefix = None, ""
        botocore_only = False
        shape = op_model.output_shape
        for name, member in shape.members.items():
            loc = member.serialization.get("location")
            wire = str(member.serialization.get("name", name)).lower()
            if loc == "headers":
                map_member, map_prefix = name, wire
            elif loc == "header":
                simple = member.type_name in ("string", "integer", "long", "boolean", "timestamp")
                if simple and wire not in complex_ and not member.serialization.get("jsonvalue"):
                    headers[wire] = (name, member.type_name)
                else:
                    complex_.add(wire)
            elif loc is not None:
                botocore_only = True  # a status-code member: botocore parses these answers
        return cls(
            headers=headers,
            complex=frozenset(complex_),
            map_member=map_member,
            map_prefix=map_prefix,
            payload=shape.serialization.get("payload"),
            botocore_only=botocore_only,
        )


class _Reply:
    """An answer's status, lower-case headers and aiohttp response."""

    __slots__ = ("headers", "raw", "status_code", "url")

    def __init__(self, url: str, status: int, headers: dict[str, str], raw: Any) -> None:
        self.url = url
        self.status_code = status
        self.headers = headers
        self.raw = raw


class _Unsupported(Exception):
    """This call takes botocore's path."""


def _serialise(value: Any, kind: str) -> str:
    if kind == "boolean":
        return "true" if value else "false"
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Unsupported
        return str(value)
    if not isinstance(value, str):
        raise _Unsupported
    return value


class LeanPath:
    """Sends the four hot operations of one aiobotocore S3 client itself.

    Built inside the running loop by the session, after the client.  ``observe``
    is told each request's time from send to answer headers (the tuner's path
    probe); it may be None.
    """

    def __init__(
        self,
        client: Any,
        *,
        user_agent: str,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        from aiobotocore.response import AioStreamingBody
        from awscrt import auth as crt_auth
        from awscrt import http as crt_http
        from botocore.awsrequest import AWSResponse, HeadersDict
        from yarl import URL

        self._client = client
        self._user_agent = user_agent
        self.observe = observe
        self._events = client.meta.events
        self._endpoint = client._endpoint
        model = client.meta.service_model
        self._models = {op: model.operation_model(name) for op, name in LEAN_OPS.items()}
        self._members: dict[str, dict[str, _Member]] = {
            op: self._member_table(m) for op, m in self._models.items()
        }
        self._parser = self._endpoint._response_parser_factory.create_parser(
            model.resolved_protocol
        )
        self._outputs = {op: _OutputTable.of(m) for op, m in self._models.items()}
        self._timestamp = self._parser._timestamp_parser
        self._endpoints: dict[tuple[str, str], _Endpoint | None] = {}
        self._aio: Any = None
        self._crt_auth = crt_auth
        self._crt_http = crt_http
        self._AWSResponse = AWSResponse
        self._HeadersDict = HeadersDict
        self._StreamingBody = AioStreamingBody
        self._URL = URL
        self._provider_key: tuple[str, str, str | None] | None = None
        self._provider: Any = None
        self.requests = 0
        """Requests sent on this path (attempts included)."""

    @staticmethod
    def _member_table(op_model: Any) -> dict[str, _Member]:
        table: dict[str, _Member] = {}
        for name, shape in op_model.input_shape.members.items():
            loc = shape.serialization.get("location")
            if name in _TRANSFORMED or loc not in ("header", "headers", "querystring"):
                continue
            kind = shape.type_name
            if kind not in ("string", "integer", "long", "boolean", "map"):
                continue  # timestamps: botocore formats them per location
            if (kind == "map") != (loc == "headers"):
                continue
            if shape.serialization.get("jsonvalue") or getattr(shape, "metadata", {}).get(
                "jsonvalue"
            ):
                continue
            table[name] = _Member(loc, shape.serialization["name"], kind)
        return table

    # -- what takes this path ----------------------------------------------------

    def accepts(self, op: str, params: Mapping[str, Any]) -> bool:
        """Whether ``op`` with ``params`` can be sent here exactly as botocore would."""
        members = self._members.get(op)
        if members is None:
            return False
        for name, value in params.items():
            if name in ("Bucket", "Key", "Body") or value is None:
                continue
            if name not in members:
                return False
            if name == "ChecksumAlgorithm":
                # Given with its value, botocore just sends both headers; alone,
                # it would compute the checksum itself.
                if f"Checksum{str(value).upper()}" not in params:
                    return False
            elif name == "Metadata":
                # botocore refuses non-ASCII metadata with its own error.
                if not isinstance(value, Mapping):
                    return False
                for k, v in value.items():
                    if not (isinstance(k, str) and isinstance(v, str)):
                        return False
                    if not (k.isascii() and v.isascii()):
                        return False
        return "Bucket" in params and "Key" in params

    async def _endpoint_for(self, op: str, bucket: str) -> _Endpoint | None:
        cache_key = (op, bucket)
        if cache_key in self._endpoints:
            return self._endpoints[cache_key]
        found: _Endpoint | None = None
        try:
            found = await self._resolve(op, bucket)
        except Exception:  # botocore's path will raise its own error for this bucket
            found = None
        self._endpoints[cache_key] = found
        return found

    async def _resolve(self, op: str, bucket: str) -> _Endpoint | None:
        client = self._client
        url, headers, props = await client._resolve_endpoint_ruleset(
            self._models[op], {"Bucket": bucket}, {}
        )
        if headers:
            return None
        schemes = (props or {}).get("authSchemes") or []
        if len(schemes) != 1:
            return None
        scheme = schemes[0]
        if scheme.get("name") != "sigv4" or not scheme.get("disableDoubleEncoding", False):
            return None
        region = scheme.get("signingRegion") or client.meta.region_name
        service = scheme.get("signingName") or "s3"
        http = self._endpoint.http_session
        proxy = getattr(http, "_proxy_config", None)
        if proxy is not None and proxy.proxy_url_for(url):
            return None
        if self._client._request_signer._credentials is None:
            return None  # anonymous (unsigned) clients: botocore knows how
        parsed = self._URL(url, encoded=True)
        if parsed.raw_query_string or parsed.raw_fragment:
            return None
        origin = str(parsed.origin())
        return _Endpoint(
            origin=origin,
            path=parsed.raw_path.removesuffix("/"),
            host=parsed.raw_authority,
            region=str(region),
            service=str(service),
        )

    # -- sending -------------------------------------------------------------------

    async def call(self, op: str, params: Mapping[str, Any], *, stream: bool = False) -> Any:
        """Send ``op``; returns botocore's parsed answer, or ``None`` if this
        bucket must take botocore's path (the caller then calls the client).

        With ``stream`` (GetObject), ``Body`` is an unread streaming body the
        caller must close.  Errors are botocore's exceptions, as the client
        raises them.
        """
        bucket = str(params["Bucket"])
        ep = await self._endpoint_for(op, bucket)
        if ep is None:
            return None
        op_model = self._models[op]
        try:
            path, headers = self.build(op, params, ep)
        except _Unsupported:
            return None  # a value of a type botocore converts itself
        body = params.get("Body")
        context: dict[str, Any] = {}
        if "ChecksumMode" in params:
            from botocore.httpchecksum import resolve_response_checksum_algorithms

            resolve_response_checksum_algorithms({"context": context}, op_model, params)
        attempt = 1
        while True:
            http_response, parsed, exc = await self._attempt(
                op, op_model, ep, path, headers, body, context, stream
            )
            retry = await self._needs_retry(op_model, attempt, http_response, parsed, exc, context)
            if retry is None:
                break
            if http_response is not None:
                http_response.raw.release()
            await asyncio.sleep(retry)
            attempt += 1
        if exc is not None:
            raise exc
        assert http_response is not None
        assert parsed is not None
        if http_response.status_code >= 300:
            code = parsed.get("Error", {}).get("Code")
            raise self._client.exceptions.from_code(code)(parsed, op_model.name)
        if attempt > 1:
            # Give back the retry quota the retries took (botocore's after-call).
            await self._events.emit(
                f"after-call.s3.{op_model.name}",
                http_response=self._aws_response(http_response),
                parsed=parsed,
                model=op_model,
                context=context,
            )
        parsed.setdefault("ResponseMetadata", {})["RetryAttempts"] = attempt - 1
        return parsed

    def build(
        self, op: str, params: Mapping[str, Any], ep: _Endpoint
    ) -> tuple[str, dict[str, str]]:
        """The request's path (with its query) and headers, before signing, as
        botocore's serialiser would make them from ``params``."""
        members = self._members[op]
        path = f"{ep.path}/{quote(str(params['Key']), safe='/~')}"
        headers: dict[str, str] = {}
        query: list[str] = []
        for name, value in params.items():
            if value is None or name in ("Bucket", "Key", "Body"):
                continue
            m = members[name]
            if m.location == "header":
                headers[m.wire] = _serialise(value, m.kind)
            elif m.location == "headers":
                for k, v in value.items():
                    headers[m.wire + k] = v
            else:
                query.append(
                    f"{quote(m.wire, safe='-_.~')}={quote(_serialise(value, m.kind), safe='-_.~')}"
                )
        if query:
            path = f"{path}?{'&'.join(query)}"
        body = params.get("Body")
        if body is not None and "Content-Length" not in headers:
            headers["Content-Length"] = str(len(body))
        return path, headers

    async def _needs_retry(
        self,
        op_model: Any,
        attempt: int,
        http_response: Any,
        parsed: Any,
        exc: BaseException | None,
        context: dict[str, Any],
    ) -> float | None:
        if exc is None and http_response is not None and http_response.status_code < 300:
            return None  # botocore retries no success of these four operations
        from botocore.hooks import first_non_none_response

        responses = await self._events.emit(
            f"needs-retry.s3.{op_model.name}",
            response=None if http_response is None else (self._aws_response(http_response), parsed),
            endpoint=self._endpoint,
            operation=op_model,
            attempts=attempt,
            caught_exception=exc,
            request_dict={"context": context},
        )
        delay = first_non_none_response(responses)
        if delay is None or delay is False:
            return None
        return float(delay)

    def sign(
        self, method: str, path: str, ep: _Endpoint, headers: Mapping[str, str], provider: Any
    ) -> dict[str, str]:
        """``headers`` with SigV4's (awscrt; unsigned payload, as botocore signs S3
        with ``payload_signing_enabled`` off), without ``host`` (aiohttp sends it)."""
        crt_http, crt_auth = self._crt_http, self._crt_auth
        signable = crt_http.HttpRequest(
            method, path, crt_http.HttpHeaders([("host", ep.host), *headers.items()])
        )
        config = crt_auth.AwsSigningConfig(
            algorithm=crt_auth.AwsSigningAlgorithm.V4,
            signature_type=crt_auth.AwsSignatureType.HTTP_REQUEST_HEADERS,
            credentials_provider=provider,
            region=ep.region,
            service=ep.service,
            signed_body_value=crt_auth.AwsSignedBodyValue.UNSIGNED_PAYLOAD,
            signed_body_header_type=crt_auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256,
            use_double_uri_encode=False,
            should_normalize_uri_path=False,
        )
        crt_auth.aws_sign_request(signable, config).result()
        return {k: v for k, v in signable.headers if k != "host"}

    async def _credentials_provider(self) -> Any:
        creds = await self._client._request_signer._credentials.get_frozen_credentials()
        key = (creds.access_key, creds.secret_key, creds.token)
        if key != self._provider_key:
            self._provider = self._crt_auth.AwsCredentialsProvider.new_static(*key)
            self._provider_key = key
        return self._provider

    async def _session(self) -> Any:
        if self._aio is None:
            self._aio = await self._endpoint.http_session._get_session(None)
        return self._aio

    async def _attempt(
        self,
        op: str,
        op_model: Any,
        ep: _Endpoint,
        path: str,
        headers: dict[str, str],
        body: Any,
        context: dict[str, Any],
        stream: bool,
    ) -> tuple[_Reply | None, Any, BaseException | None]:
        """One attempt: (reply, parsed answer, None) or (None, None, error)."""
        method = op_model.http["method"]
        url = ep.origin + path
        try:
            provider = await self._credentials_provider()
            sent = self.sign(method, path, ep, headers, provider)
            sent["User-Agent"] = self._user_agent
            sent["Accept-Encoding"] = "identity"
            if log.isEnabledFor(logging.DEBUG):
                log.debug("Making request for OperationModel(name=%s) (lean path)", op_model.name)
                log.debug("Sending http request: %s %s headers=%r", method, url, sent)
            session = await self._session()
            self.requests += 1
            started = time.monotonic()
            raw = await session.request(
                method, self._URL(url, encoded=True), headers=sent, data=body
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return None, None, _botocore_error(exc, url)
        try:
            if self.observe is not None:
                self.observe(op_model.name, time.monotonic() - started)
            reply = _Reply(
                url,
                raw.status,
                {k.decode("utf-8").lower(): v.decode("utf-8") for k, v in raw.raw_headers},
                raw,
            )
            content: Any
            if raw.status >= 300 or not stream:
                content = await raw.read()
                raw.release()
            else:
                content = self._StreamingBody(raw, reply.headers.get("content-length"))
            parsed = None
            checksum = bool(context.get("checksum"))
            if raw.status < 300 and (stream or not checksum):
                parsed = self._fast_parse(op, reply, content)
                if parsed is not None and checksum:
                    # botocore's response-checksum handling wraps the body.
                    from aiobotocore.httpchecksum import handle_checksum_body

                    answer = {"headers": reply.headers, "body": content, "context": {}}
                    await handle_checksum_body(reply, answer, context, op_model)
                    parsed[self._outputs[op].payload or "Body"] = answer["body"]
            if parsed is None:
                parsed = await self._botocore_parse(op_model, reply, content, context)
        except asyncio.CancelledError:
            raw.release()
            raise
        except Exception as exc:
            raw.release()
            return None, None, _botocore_error(exc, url)
        return reply, parsed, None

    def _fast_parse(self, op: str, reply: _Reply, content: Any) -> dict[str, Any] | None:
        """The answer as botocore's rest-xml parser gives it, from its headers
        (tests/test_leanpath.py compares the two); None to let botocore parse it."""
        table = self._outputs[op]
        if table.botocore_only or (table.payload is None and content):
            return None  # a status-code member, or a body where none is expected
        parsed: dict[str, Any] = {}
        found: dict[str, str] = {}
        members, complex_, prefix = table.headers, table.complex, table.map_prefix
        try:
            for name, value in reply.headers.items():
                member = members.get(name)
                if member is not None:
                    kind = member[1]
                    if kind == "string":
                        parsed[member[0]] = value
                    elif kind == "boolean":
                        parsed[member[0]] = value == "true"
                    elif kind == "timestamp":
                        parsed[member[0]] = self._timestamp(value)
                    else:
                        parsed[member[0]] = int(value)
                elif name in complex_:
                    return None
                elif prefix and name.startswith(prefix):
                    found[name[len(prefix) :]] = value
        except (ValueError, TypeError, OverflowError):
            return None  # botocore's parser raises its own error for it
        if table.map_member is not None:
            parsed[table.map_member] = found
        if table.payload is not None:
            parsed[table.payload] = content
        headers = reply.headers
        metadata: dict[str, Any] = {}
        if "x-amzn-requestid" in headers:
            metadata["RequestId"] = headers["x-amzn-requestid"]
        elif "x-amz-request-id" in headers:
            metadata["RequestId"] = headers["x-amz-request-id"]
            metadata["HostId"] = headers.get("x-amz-id-2", "")
        metadata["HTTPStatusCode"] = reply.status_code
        metadata["HTTPHeaders"] = dict(headers)
        parsed["ResponseMetadata"] = metadata
        return parsed

    async def _botocore_parse(
        self, op_model: Any, reply: _Reply, content: Any, context: dict[str, Any]
    ) -> dict[str, Any]:
        """botocore's own parse of the answer, with its before-parse handlers
        and, for a GET with ``ChecksumMode``, its response-checksum handling."""
        headers = self._HeadersDict(reply.headers)
        response_dict: dict[str, Any] = {
            "headers": headers,
            "status_code": reply.status_code,
            "context": {"operation_name": op_model.name},
            "body": content,
        }
        if context.get("checksum") and reply.status_code < 300:
            from aiobotocore.httpchecksum import handle_checksum_body

            http_response = self._AWSResponse(reply.url, reply.status_code, headers, reply.raw)
            await handle_checksum_body(http_response, response_dict, context, op_model)
        customized: dict[str, Any] = {}
        await self._events.emit(
            f"before-parse.s3.{op_model.name}",
            operation_model=op_model,
            response_dict=response_dict,
            customized_response_dict=customized,
        )
        parsed: dict[str, Any] = await self._parser.parse(response_dict, op_model.output_shape)
        parsed.update(customized)
        return parsed

    def _aws_response(self, reply: _Reply) -> Any:
        return self._AWSResponse(
            reply.url, reply.status_code, self._HeadersDict(reply.headers), reply.raw
        )


def _botocore_error(exc: BaseException, url: str) -> BaseException:
    """aiohttp's errors as botocore's, the way aiobotocore's HTTP session maps them."""
    mapped: BaseException = _map_error(exc, url)
    return mapped


def _map_error(exc: BaseException, url: str) -> Any:
    import socket

    import aiohttp
    from botocore import exceptions as bce

    if isinstance(exc, bce.BotoCoreError):
        return exc
    if isinstance(exc, aiohttp.ClientSSLError):
        return bce.SSLError(endpoint_url=url, error=exc)
    if isinstance(
        exc,
        aiohttp.ServerDisconnectedError
        | aiohttp.ClientPayloadError
        | aiohttp.http_exceptions.BadStatusLine,
    ):
        return bce.ConnectionClosedError(error=exc, request=None, endpoint_url=url)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        if str(exc).lower().startswith("connect"):
            return bce.ConnectTimeoutError(endpoint_url=url, error=exc)
        return bce.ReadTimeoutError(endpoint_url=url, error=exc)
    if isinstance(
        exc, aiohttp.ClientConnectorError | aiohttp.ClientConnectionError | socket.gaierror
    ):
        return bce.EndpointConnectionError(endpoint_url=url, error=exc)
    if isinstance(exc, asyncio.TimeoutError):
        return bce.ReadTimeoutError(endpoint_url=url, error=exc)
    return bce.HTTPClientError(error=exc)
