"""Asyncio client for WedSync Gateway, on pycrdt (proto/spec.md)."""

from gateway_client.asyncio import GatewayClient, GatewayClosed
from gateway_client.backoff import backoff
from gateway_client.sansio import ClientProtocol

__all__ = ["ClientProtocol", "GatewayClient", "GatewayClosed", "backoff"]
