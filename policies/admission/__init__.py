"""Admission decisions: admit now, queue until a deadline, or shed with Retry-After."""

from policies.admission.decide import AdmissionView, decide

__all__ = ["AdmissionView", "decide"]
