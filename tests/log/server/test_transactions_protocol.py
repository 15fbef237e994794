"""The transaction APIs over the wire: each refusal is an error code, at the code its version
knows, and bad frames for these APIs harm nothing."""

from __future__ import annotations

import contextlib
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamer.log.protocol.error_codes import ErrorCode
from streamer.log.protocol.messages.add_offsets_to_txn import (
    AddOffsetsToTxnRequest,
    AddOffsetsToTxnResponse,
)
from streamer.log.protocol.messages.add_partitions_to_txn import (
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse,
    AddPartitionsToTxnTopic,
)
from streamer.log.protocol.messages.end_txn import EndTxnRequest, EndTxnResponse
from streamer.log.protocol.messages.find_coordinator import (
    FindCoordinatorRequest,
    FindCoordinatorResponse,
)
from streamer.log.protocol.messages.init_producer_id import (
    InitProducerIdRequest,
    InitProducerIdResponse,
)
from streamer.log.protocol.messages.produce import (
    ProducePartitionData,
    ProduceRequest,
    ProduceResponse,
    ProduceTopicData,
)
from streamer.log.protocol.messages.txn_offset_commit import (
    TxnOffsetCommitRequest,
    TxnOffsetCommitRequestPartition,
    TxnOffsetCommitRequestTopic,
    TxnOffsetCommitResponse,
)

from ..batches import build_batch
from .conftest import RawClient, ServerThread
from .test_robustness import assert_server_serves

_FIXTURE = [HealthCheck.function_scoped_fixture]  # one server for the module, by design


def _init(client: RawClient, transactional_id: str, version: int = 0) -> tuple[int, int]:
    response = client.request(InitProducerIdRequest(
        transactional_id=transactional_id, transaction_timeout_ms=60_000), version)  # fmt: skip
    assert isinstance(response, InitProducerIdResponse)
    assert response.error_code == ErrorCode.NONE
    return response.producer_id, response.producer_epoch


def _end(client: RawClient, transactional_id: str, ids: tuple[int, int], version: int) -> int:
    response = client.request(
        EndTxnRequest(transactional_id=transactional_id, producer_id=ids[0],
                      producer_epoch=ids[1], committed=True), version,
    )  # fmt: skip
    assert isinstance(response, EndTxnResponse)
    return response.error_code


def test_find_coordinator_for_transactional_ids(client: RawClient, server: ServerThread) -> None:
    found = client.request(FindCoordinatorRequest(key="txn", key_type=1), 1)
    assert isinstance(found, FindCoordinatorResponse)
    assert (found.error_code, found.port) == (ErrorCode.NONE, server.port)
    for key, key_type in (("", 1), ("group", 7)):
        refused = client.request(FindCoordinatorRequest(key=key, key_type=key_type), 2)
        assert isinstance(refused, FindCoordinatorResponse)
        assert refused.error_code == ErrorCode.INVALID_REQUEST


def test_a_fenced_producer_gets_the_code_its_version_knows(client: RawClient) -> None:
    old = _init(client, "fenced-txn")
    new = _init(client, "fenced-txn", version=4)
    assert new == (old[0], old[1] + 1)
    assert _end(client, "fenced-txn", old, 0) == ErrorCode.INVALID_PRODUCER_EPOCH
    assert _end(client, "fenced-txn", old, 2) == ErrorCode.PRODUCER_FENCED
    assert _end(client, "fenced-txn", new, 2) == ErrorCode.INVALID_TXN_STATE  # nothing open
    assert _end(client, "unknown-txn", new, 1) == ErrorCode.INVALID_PRODUCER_ID_MAPPING
    timeout = client.request(
        InitProducerIdRequest(transactional_id="t", transaction_timeout_ms=0), 0
    )
    assert isinstance(timeout, InitProducerIdResponse)
    assert timeout.error_code == ErrorCode.INVALID_TRANSACTION_TIMEOUT


def test_unknown_partitions_fail_alone_and_nothing_is_added(
    client: RawClient, server: ServerThread
) -> None:
    server.log.create_topic("txn-out", 1)
    ids = _init(client, "partitions-txn")
    response = client.request(
        AddPartitionsToTxnRequest(
            transactional_id="partitions-txn", producer_id=ids[0], producer_epoch=ids[1],
            topics=[AddPartitionsToTxnTopic(name="txn-out", partitions=[0, 3]),
                    AddPartitionsToTxnTopic(name="__transaction_state", partitions=[0])],
        ), 2,
    )  # fmt: skip
    assert isinstance(response, AddPartitionsToTxnResponse)
    codes = {(t.name, r.partition_index): r.partition_error_code
             for t in response.results for r in t.results_by_partition}  # fmt: skip
    assert codes == {
        ("txn-out", 0): ErrorCode.OPERATION_NOT_ATTEMPTED,
        ("txn-out", 3): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ("__transaction_state", 0): ErrorCode.INVALID_TOPIC_EXCEPTION,
    }
    assert _end(client, "partitions-txn", ids, 0) == ErrorCode.INVALID_TXN_STATE


def test_txn_offset_commit_v3_checks_the_group_member(client: RawClient) -> None:
    ids = _init(client, "offsets-txn")
    added = client.request(
        AddOffsetsToTxnRequest(transactional_id="offsets-txn", producer_id=ids[0],
                               producer_epoch=ids[1], group_id="txn-group"), 0,
    )  # fmt: skip
    assert isinstance(added, AddOffsetsToTxnResponse) and added.error_code == ErrorCode.NONE

    def commit(version: int, **member: object) -> list[int]:
        response = client.request(
            TxnOffsetCommitRequest(
                transactional_id="offsets-txn", group_id="txn-group", producer_id=ids[0],
                producer_epoch=ids[1],
                topics=[TxnOffsetCommitRequestTopic(name="in", partitions=[
                    TxnOffsetCommitRequestPartition(partition_index=0, committed_offset=9)])],
                **member,  # type: ignore[arg-type]
            ), version,
        )  # fmt: skip
        assert isinstance(response, TxnOffsetCommitResponse)
        return [p.error_code for t in response.topics for p in t.partitions]

    assert commit(3, generation_id=4, member_id="gone") == [ErrorCode.UNKNOWN_MEMBER_ID]
    assert commit(3, generation_id=4) == [ErrorCode.ILLEGAL_GENERATION]
    assert commit(3) == [ErrorCode.NONE]  # generation -1, no member: not checked
    assert commit(0) == [ErrorCode.NONE]
    assert _end(client, "offsets-txn", ids, 0) == ErrorCode.NONE


def test_a_transactional_batch_goes_only_to_its_open_transaction(
    client: RawClient, server: ServerThread
) -> None:
    server.log.create_topic("txn-verified", 1)
    ids = _init(client, "verified-txn")

    def produce(sequence: int) -> int:
        batch = build_batch(1, producer_id=ids[0], producer_epoch=ids[1],
                            base_sequence=sequence, transactional=True)  # fmt: skip
        response = client.request(ProduceRequest(
            transactional_id="verified-txn", acks=-1, timeout_ms=1000,
            topics=[ProduceTopicData(name="txn-verified", partitions=[
                ProducePartitionData(index=0, records=batch)])],
        ), 8)  # fmt: skip
        assert isinstance(response, ProduceResponse)
        return response.responses[0].partitions[0].error_code

    assert produce(0) == ErrorCode.INVALID_TXN_STATE  # not added to the transaction
    added = client.request(AddPartitionsToTxnRequest(
        transactional_id="verified-txn", producer_id=ids[0], producer_epoch=ids[1],
        topics=[AddPartitionsToTxnTopic(name="txn-verified", partitions=[0])]), 0)  # fmt: skip
    assert isinstance(added, AddPartitionsToTxnResponse)
    assert produce(0) == ErrorCode.NONE
    assert _end(client, "verified-txn", ids, 0) == ErrorCode.NONE
    # A late write of the ended transaction opens nothing: the partition stays stable.
    assert produce(1) == ErrorCode.INVALID_TXN_STATE
    partition = server.log.partition("txn-verified", 0)
    assert partition.open_transactions() == {}
    assert partition.last_stable_offset == partition.high_watermark == 2


def _header(api_key: int, version: int) -> bytes:
    return struct.pack(">hhih", api_key, version, 7, -1)


@settings(max_examples=100, deadline=None, suppress_health_check=_FIXTURE)
@given(
    api_key=st.sampled_from([10, 22, 24, 25, 26, 28]),
    version=st.integers(-1, 6),
    body=st.binary(max_size=200),
)
def test_garbage_for_the_transaction_apis_never_harms_the_server(
    server: ServerThread, api_key: int, version: int, body: bytes
) -> None:
    client = RawClient(server.port)
    try:
        client.send_frame(_header(api_key, version) + body)
        client.sock.settimeout(2)
        with contextlib.suppress(TimeoutError):
            client.receive_frame()
    finally:
        client.close()
    assert_server_serves(server)
