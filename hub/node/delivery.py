"""Local delivery: a call or cast for a child that runs on this node goes to its mailbox.

:class:`LocalDelivery` serves both sides: the shared API's calls from this process (through
the node's :class:`~hub.api.policy.Policy`, no network) and the RPC server's requests from
other nodes (it is the server's :class:`~hub.messaging.rpc.Dispatcher`). Both check the
same things in the same order: this node owns the child (else ``ChildMoved``), or, for an
``all_replicas`` call, runs an instance of it (else ``ChildNotRunning``); the caller's
fencing token is the owner's (else ``StaleHandle``). The payload is decoded and the reply
encoded exactly as over RPC, so local and remote calls behave alike.
"""

from __future__ import annotations

from hub.api.policy import Delivery
from hub.core.reconciler import Reconciler
from hub.core.supervisor import Supervisor
from hub.errors import CallTimeout, ChildMoved, ChildNotRunning, StaleHandle
from hub.messaging.payload import decode_payload, encode_payload
from hub.messaging.rpc import (
    CallReplyData,
    CallRequestData,
    CastRequestData,
    ReplyStatus,
    RpcConfig,
)


class LocalDelivery:
    """Hands messages to this node's mailboxes (see the module docstring).

    Args:
        node_id: this node.
        reconciler: says which children this node owns, with their fencing tokens.
        supervisor: holds the workers' mailboxes.
        rpc: node-RPC settings (their ``call_timeout`` bounds a remote call's handler).
    """

    def __init__(
        self,
        node_id: str,
        reconciler: Reconciler,
        supervisor: Supervisor,
        rpc: RpcConfig | None,
    ) -> None:
        self._node_id = node_id
        #: the reconciler's ownership map, updated in place, never rebound (hub.core.claims)
        self._owned = reconciler.claims.owned
        self._supervisor = supervisor
        self._call_timeout = rpc.call_timeout if rpc is not None else 5.0

    async def deliver(self, delivery: Delivery) -> CallReplyData:
        """Deliver to the local instance and return the (encoded) reply.

        Raises:
            ChildMoved, ChildNotRunning, StaleHandle, CallTimeout, MailboxFull,
            BadPayload, NotSerializable, NotCallable, HandlerError.
        """
        child_id = delivery.child_id
        owned = self._owned.get(child_id)
        if delivery.replica and owned is None:
            owned = 0  # a replica instance (all_replicas): no owner token to check
            if not self._supervisor.is_running(child_id):
                raise ChildNotRunning(child_id, self._node_id)
        elif owned is None:
            raise ChildMoved(child_id, self._node_id, "this node does not own the child")
        token = delivery.token
        if token and owned and token != owned:
            raise StaleHandle(child_id, self._node_id, token, owned)
        mailbox = self._supervisor.mailbox(child_id, owned or None)
        message = decode_payload(delivery.payload, delivery.codec, child_id=child_id)
        if delivery.kind == "cast":
            mailbox.cast(message)
            return CallReplyData(status=ReplyStatus.OK, node_id=self._node_id, fencing_token=owned)
        try:
            result = await mailbox.call(message, delivery.timeout)
        except TimeoutError:
            raise CallTimeout(
                child_id, self._node_id, f"no reply within {delivery.timeout}s"
            ) from None
        data, reply_codec = encode_payload(result, child_id=child_id)
        return CallReplyData(
            status=ReplyStatus.OK,
            payload=data,
            codec=reply_codec,
            node_id=self._node_id,
            fencing_token=owned,
        )

    # -- the RPC server's Dispatcher ---------------------------------------------------

    async def dispatch_call(self, request: CallRequestData) -> CallReplyData:
        """A call from another node (:class:`~hub.messaging.rpc.Dispatcher`)."""
        return await self.deliver(
            Delivery(
                "call",
                request.child_id,
                request.fencing_token,
                request.payload,
                request.codec,
                self._call_timeout,
                request.all_replicas,
            )
        )

    async def dispatch_cast(self, request: CastRequestData) -> CallReplyData:
        """A cast from another node (:class:`~hub.messaging.rpc.Dispatcher`)."""
        return await self.deliver(
            Delivery(
                "cast", request.child_id, request.fencing_token, request.payload, request.codec, 0
            )
        )
