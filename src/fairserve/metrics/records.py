"""Per-request records, stored column-wise so a million requests stay small.

The simulator appends one row per request when it ends (completed or failed);
``RequestRecords.to_numpy`` turns the columns into numpy arrays for summaries.
Times are absolute simulated (or wall) seconds; NaN marks "never happened"
(for example ``first_token_s`` of a request that failed before its prefill).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np

from fairserve.core.model import Outcome

NAN = float("nan")
OUTCOME_CODES: tuple[Outcome, ...] = (Outcome.COMPLETED, Outcome.CANCELLED, Outcome.FAILED)
_OUTCOME_INDEX = {o: i for i, o in enumerate(OUTCOME_CODES)}


@dataclass(frozen=True)
class RecordArrays:
    """The records as numpy arrays, one entry per ended request."""

    request_id: np.ndarray  # int64
    tenant: np.ndarray  # int32 code into ``tenant_names``
    tenant_names: tuple[str, ...]
    instance: np.ndarray  # int32, -1 when never placed on an instance
    outcome: np.ndarray  # int8 code into OUTCOME_CODES
    arrival_s: np.ndarray
    first_scheduled_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    prompt_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64, tokens generated
    cached_prompt_tokens: np.ndarray  # int64, prompt tokens served from the prefix cache
    preemptions: np.ndarray  # int32

    def __len__(self) -> int:
        return int(self.request_id.shape[0])

    def select(self, mask: np.ndarray) -> RecordArrays:
        """The records where ``mask`` (boolean, or indices) selects."""
        return RecordArrays(
            request_id=self.request_id[mask],
            tenant=self.tenant[mask],
            tenant_names=self.tenant_names,
            instance=self.instance[mask],
            outcome=self.outcome[mask],
            arrival_s=self.arrival_s[mask],
            first_scheduled_s=self.first_scheduled_s[mask],
            first_token_s=self.first_token_s[mask],
            finish_s=self.finish_s[mask],
            prompt_tokens=self.prompt_tokens[mask],
            output_tokens=self.output_tokens[mask],
            cached_prompt_tokens=self.cached_prompt_tokens[mask],
            preemptions=self.preemptions[mask],
        )

    @property
    def completed(self) -> np.ndarray:
        """Boolean mask of completed requests."""
        return self.outcome == _OUTCOME_INDEX[Outcome.COMPLETED]

    @property
    def ttft_s(self) -> np.ndarray:
        """Arrival to first token."""
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> np.ndarray:
        """Arrival to last token."""
        return self.finish_s - self.arrival_s

    @property
    def queue_s(self) -> np.ndarray:
        """Arrival to first scheduled on an engine step."""
        return self.first_scheduled_s - self.arrival_s

    @property
    def tpot_s(self) -> np.ndarray:
        """Mean time between output tokens after the first; NaN for one-token outputs."""
        gaps = (self.output_tokens - 1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(gaps > 0, (self.finish_s - self.first_token_s) / gaps, np.nan)


class RequestRecords:
    """Append-only column store of ended requests."""

    __slots__ = (
        "_arrival",
        "_cached",
        "_finish",
        "_first_sched",
        "_first_token",
        "_id",
        "_instance",
        "_outcome",
        "_output",
        "_preempt",
        "_prompt",
        "_tenant",
        "_tenant_codes",
        "failure_reasons",
    )

    def __init__(self) -> None:
        self._id = array("q")
        self._tenant = array("i")
        self._instance = array("i")
        self._outcome = array("b")
        self._arrival = array("d")
        self._first_sched = array("d")
        self._first_token = array("d")
        self._finish = array("d")
        self._prompt = array("q")
        self._output = array("q")
        self._cached = array("q")
        self._preempt = array("i")
        self._tenant_codes: dict[str, int] = {}
        self.failure_reasons: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._id)

    def tenant_code(self, tenant: str) -> int:
        """The integer code of a tenant name, assigned on first sight."""
        code = self._tenant_codes.get(tenant)
        if code is None:
            code = self._tenant_codes[tenant] = len(self._tenant_codes)
        return code

    def add(
        self,
        request_id: int,
        tenant: str,
        instance: int | None,
        outcome: Outcome,
        arrival_s: float,
        first_scheduled_s: float,
        first_token_s: float,
        finish_s: float,
        prompt_tokens: int,
        output_tokens: int,
        cached_prompt_tokens: int,
        preemptions: int,
        reason: str | None = None,
    ) -> None:
        """Append one ended request; ``instance`` is None for one never placed on an instance."""
        self._id.append(request_id)
        self._tenant.append(self.tenant_code(tenant))
        self._instance.append(-1 if instance is None else instance)
        self._outcome.append(_OUTCOME_INDEX[outcome])
        self._arrival.append(arrival_s)
        self._first_sched.append(first_scheduled_s)
        self._first_token.append(first_token_s)
        self._finish.append(finish_s)
        self._prompt.append(prompt_tokens)
        self._output.append(output_tokens)
        self._cached.append(cached_prompt_tokens)
        self._preempt.append(preemptions)
        if reason is not None:
            self.failure_reasons[request_id] = reason

    def to_numpy(self) -> RecordArrays:
        """Copy the columns into numpy arrays."""
        names = tuple(sorted(self._tenant_codes, key=self._tenant_codes.__getitem__))
        return RecordArrays(
            request_id=np.frombuffer(self._id, dtype=np.int64).copy(),
            tenant=np.frombuffer(self._tenant, dtype=np.int32).copy(),
            tenant_names=names,
            instance=np.frombuffer(self._instance, dtype=np.int32).copy(),
            outcome=np.frombuffer(self._outcome, dtype=np.int8).copy(),
            arrival_s=np.frombuffer(self._arrival, dtype=np.float64).copy(),
            first_scheduled_s=np.frombuffer(self._first_sched, dtype=np.float64).copy(),
            first_token_s=np.frombuffer(self._first_token, dtype=np.float64).copy(),
            finish_s=np.frombuffer(self._finish, dtype=np.float64).copy(),
            prompt_tokens=np.frombuffer(self._prompt, dtype=np.int64).copy(),
            output_tokens=np.frombuffer(self._output, dtype=np.int64).copy(),
            cached_prompt_tokens=np.frombuffer(self._cached, dtype=np.int64).copy(),
            preemptions=np.frombuffer(self._preempt, dtype=np.int32).copy(),
        )
