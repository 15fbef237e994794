"""CreatePartitions (key 37), v0-1; flexible versions (2+) are not served."""

from __future__ import annotations

from ..schema import BOOL, INT16, INT32, NULLABLE_STRING, STRING, Api, array, f, message


@message
class CreatePartitionsAssignment:
    broker_ids: list[int] = f(array(INT32))


@message
class CreatePartitionsTopic:
    name: str = f(STRING)
    count: int = f(INT32)  # the new total, not the number added
    # null: the broker places the new partitions.
    assignments: list[CreatePartitionsAssignment] | None = f(
        array(CreatePartitionsAssignment, nullable=True)
    )


@message
class CreatePartitionsRequest:
    topics: list[CreatePartitionsTopic] = f(array(CreatePartitionsTopic))
    timeout_ms: int = f(INT32)
    validate_only: bool = f(BOOL)


@message
class CreatePartitionsTopicResult:
    name: str = f(STRING)
    error_code: int = f(INT16)
    error_message: str | None = f(NULLABLE_STRING)


@message
class CreatePartitionsResponse:
    throttle_time_ms: int = f(INT32)
    results: list[CreatePartitionsTopicResult] = f(array(CreatePartitionsTopicResult))


API = Api(37, "CreatePartitions", CreatePartitionsRequest, CreatePartitionsResponse, 0, 1)
