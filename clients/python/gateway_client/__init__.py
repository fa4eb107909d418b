"""Asyncio client for WedSync Gateway, on pycrdt (proto/spec.md)."""

from gateway_client.asyncio import GatewayClient, GatewayClosed
from gateway_client.backoff import backoff
from gateway_client.sansio import Acknowledgement, ClientProtocol
from gateway_client.sync import ClientSync, Origin, Replica

__all__ = [
    "Acknowledgement",
    "ClientProtocol",
    "ClientSync",
    "GatewayClient",
    "GatewayClosed",
    "Origin",
    "Replica",
    "backoff",
]
