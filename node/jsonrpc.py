"""JSON-RPC 2.0 envelope: parse a request body, dispatch to methods, encode the reply.

Transport-free: `Dispatcher.handle_body(bytes) -> bytes | None` is all the HTTP layer
(node/rpc.py) needs. Error codes follow JSON-RPC 2.0 plus two of bitcoind's:
-26 (rejected by a consensus rule, message = SPEC reject reason) and -8 (bad argument).
SPEC §12.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

import trio

from consensus.errors import ConsensusError

log = logging.getLogger("rpc")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
RPC_VERIFY_REJECTED = -26  # a consensus rule rejected the input; message = reject reason
RPC_INVALID_PARAMETER = -8  # an argument has the right type but a bad value

MAX_BATCH = 10_000  # requests per batch
YIELD_EVERY = 0.002  # seconds of a batch's calls between trio checkpoints


class RpcError(Exception):
    """An error a method wants reported as-is: `code` (int) and `message` (str)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class _Method:
    """One callable with its signature, inspected once at start-up."""

    name: str
    func: Callable[..., Any]
    signature: inspect.Signature | None  # None: not introspectable, arity unchecked
    simple: tuple[type, ...] | None = None  # see _simple_types

    def check_params(self, params: list[Any]) -> None:
        """Raise RpcError(INVALID_PARAMS) unless `params` fit the signature."""
        if self.signature is None:
            return
        fast = self.simple
        if fast is not None and len(params) == len(fast) and all(
                isinstance(v, t) and not (isinstance(v, bool) and t is not bool)
                for v, t in zip(params, fast)):
            return  # exactly the required positional params, of simple types: they fit
        try:
            bound = self.signature.bind(*params)
        except TypeError as exc:
            raise RpcError(INVALID_PARAMS, f"invalid params for {self.usage()}: {exc}") from None
        for pname, value in bound.arguments.items():
            param = self.signature.parameters[pname]
            values = value if param.kind is inspect.Parameter.VAR_POSITIONAL else (value,)
            for item in values:
                if not _matches(item, param.annotation):
                    raise RpcError(
                        INVALID_PARAMS,
                        f"invalid params for {self.usage()}: {pname} must be "
                        f"{_describe(param.annotation)}, got {_json_type(item)}",
                    )

    def usage(self) -> str:
        """`name(a, b)` as shown in error messages."""
        if self.signature is None:
            return self.name
        names = [
            ("*" if p.kind is inspect.Parameter.VAR_POSITIONAL else "") + p.name
            for p in self.signature.parameters.values()
            if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                          inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          inspect.Parameter.VAR_POSITIONAL)
        ]
        return f"{self.name}({', '.join(names)})"


def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    """The signature with annotations resolved when possible; None if unavailable."""
    try:
        return inspect.signature(func, eval_str=True)
    except (NameError, AttributeError, TypeError, SyntaxError):
        pass  # an annotation names something not importable here: check arity only
    except ValueError:
        return None
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def _simple_types(signature: inspect.Signature | None) -> tuple[type, ...] | None:
    """The types of a signature made only of required positional parameters annotated
    ``str``/``int``/``bool``/``list``/``dict`` (params of exactly those types fit it
    without ``Signature.bind``), else None."""
    if signature is None:
        return None
    types_ = []
    for p in signature.parameters.values():
        if (p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD
                or p.default is not inspect.Parameter.empty
                or p.annotation not in (str, int, bool, list, dict)):
            return None
        types_.append(p.annotation)
    return tuple(types_)


_SIMPLE_TYPES: dict[Any, tuple[type, ...]] = {
    str: (str,), bool: (bool,), list: (list,), dict: (dict,), int: (int,), float: (int, float),
}


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a JSON value fits a simple annotation; unknown annotations always fit."""
    if annotation is inspect.Parameter.empty or annotation is Any or isinstance(annotation, str):
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if origin in (list, dict):
        annotation = origin
    accepted = _SIMPLE_TYPES.get(annotation)
    if accepted is None:
        return True
    if isinstance(value, bool) and annotation is not bool:
        return False
    return isinstance(value, accepted)


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_describe(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "an array", dict: "an object"}
    return names.get(origin or annotation, str(annotation))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _is_valid_id(value: Any) -> bool:
    return value is None or isinstance(value, str) or (
        isinstance(value, (int, float)) and not isinstance(value, bool)
    )


# One encoder for every reply: ``json.dumps`` with an argument builds a new JSONEncoder
# per call. NaN and infinities are not JSON (RFC 8259), so they are refused.
_encode = json.JSONEncoder(allow_nan=False).encode


def _result(req_id: Any, result: Any) -> str:
    """The reply object for ``result``, as ``_encode`` writes it. A string result (a txid,
    a hex block) with an integer or string id, the common case of a batch, is written
    directly: ten times faster than the encoder's general path, same bytes."""
    if type(result) is str and (type(req_id) is int or type(req_id) is str):
        return (f'{{"jsonrpc": "2.0", "id": {_encode(req_id) if type(req_id) is str else req_id}, '
                f'"result": {encode_basestring_ascii(result)}}}')
    return _encode({"jsonrpc": "2.0", "id": req_id, "result": result})


def _error(req_id: Any, code: int, message: str, data: Any = None) -> str:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return _encode({"jsonrpc": "2.0", "id": req_id, "error": error})


class Dispatcher:
    """Runs JSON-RPC 2.0 requests against a table of methods (SPEC §12).

    methods: name -> callable taking positional JSON values; sync callables run directly
    in the trio thread, `async def` ones are awaited. Results must be JSON-encodable.
    """

    def __init__(self, methods: Mapping[str, Callable[..., Any]],
                 batch_hook: Callable[[list], Any] | None = None) -> None:
        self._methods = {
            name: _Method(name, func, sig, _simple_types(sig))
            for name, func, sig in ((n, f, _signature(f)) for n, f in methods.items())
        }
        # awaited with the whole batch (a list of raw request objects) before it runs,
        # e.g. to check a batch's signatures in parallel; must not raise
        self._batch_hook = batch_hook

    async def handle_body(self, body: bytes) -> bytes | None:
        """Answer one HTTP body: a request object or a batch array.

        Returns the UTF-8 JSON reply, or None when every request was a notification
        (nothing to send). Never raises for any input bytes.
        """
        try:
            request = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:  # also bad UTF-8 and huge int literals
            return _error(None, PARSE_ERROR, f"parse error: {exc}"[:200]).encode()
        if not isinstance(request, list):
            reply = await self.handle_request(request)
            return reply.encode() if reply is not None else None
        if not request:
            return _error(None, INVALID_REQUEST, "invalid request: empty batch").encode()
        if len(request) > MAX_BATCH:
            return _error(None, INVALID_REQUEST,
                          f"invalid request: batch of {len(request)} > {MAX_BATCH}").encode()
        if self._batch_hook is not None:
            await self._batch_hook(request)
        replies = []
        yielded = time.perf_counter()
        for item in request:
            reply = await self.handle_request(item)
            if reply is not None:
                replies.append(reply)
            now = time.perf_counter()
            if now - yielded > YIELD_EVERY:  # let other tasks (getinfo, peers) run
                await trio.lowlevel.checkpoint()
                yielded = time.perf_counter()
        if not replies:
            return None
        return ("[" + ",".join(replies) + "]").encode()

    async def handle_request(self, request: Any) -> str | None:
        """Answer one decoded request object; None for a notification."""
        if not isinstance(request, dict):
            return _error(None, INVALID_REQUEST, "invalid request: expected an object")
        notification = "id" not in request
        req_id = request.get("id")
        if not _is_valid_id(req_id):
            return _error(None, INVALID_REQUEST,
                          "invalid request: id must be a string, a number or null")
        if request.get("jsonrpc", "2.0") != "2.0":
            return _error(req_id, INVALID_REQUEST, 'invalid request: jsonrpc must be "2.0"')
        name = request.get("method")
        if not isinstance(name, str):
            return _error(req_id, INVALID_REQUEST, "invalid request: method must be a string")
        params = request.get("params", [])
        if isinstance(params, dict):
            reply = _error(req_id, INVALID_PARAMS, "invalid params: params must be an array")
            return None if notification else reply
        if not isinstance(params, list):
            return _error(req_id, INVALID_REQUEST, "invalid request: params must be an array")
        reply = await self._call(req_id, name, params)
        return None if notification else reply

    async def _call(self, req_id: Any, name: str, params: list[Any]) -> str:
        method = self._methods.get(name)
        if method is None:
            return _error(req_id, METHOD_NOT_FOUND, f"method not found: {name[:100]}")
        try:
            method.check_params(params)
            result = method.func(*params)
            if inspect.isawaitable(result):
                result = await result
        except RpcError as exc:
            log.debug("rpc %s: error %d %s", name, exc.code, exc.message)
            return _error(req_id, exc.code, exc.message)
        except ConsensusError as exc:
            log.debug("rpc %s: rejected %s %s", name, exc.reason, exc.detail)
            return _error(req_id, RPC_VERIFY_REJECTED, exc.reason, exc.detail or None)
        except ValueError as exc:
            log.debug("rpc %s: invalid parameter: %s", name, exc)
            return _error(req_id, RPC_INVALID_PARAMETER, str(exc) or "invalid parameter")
        except Exception:
            log.exception("rpc %s failed", name)
            return _error(req_id, INTERNAL_ERROR, "internal error")
        try:
            reply = _result(req_id, result)
        except (TypeError, ValueError, RecursionError):
            log.exception("rpc %s returned a value that is not JSON", name)
            return _error(req_id, INTERNAL_ERROR, "internal error")
        log.debug("rpc %s: ok", name)
        return reply
