"""The WedSync wire protocol (proto/spec.md): y-websocket messages and the WedSync extensions.

Shared by the gateway, the Python client and the load-test kit; depends on nothing they need.
``codec`` decodes with every length bounded by the bytes present and refuses trailing bytes;
``messages`` holds one frozen dataclass per message; ``close_codes`` says which close codes
mean "reconnect".
"""

from wedsync_protocol import close_codes, codec, messages
from wedsync_protocol.close_codes import CloseCode, needs_new_token, reconnects
from wedsync_protocol.errors import ProtocolError
from wedsync_protocol.messages import Feature, Message, MessageType

__all__ = [
    "CloseCode",
    "Feature",
    "Message",
    "MessageType",
    "ProtocolError",
    "close_codes",
    "codec",
    "messages",
    "needs_new_token",
    "reconnects",
]
