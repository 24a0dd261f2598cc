"""Pascal VOC ingestion: discovery, hardened parsing, validation, the problem report, splits and
synthetic data. TensorFlow-free."""

from kubedetect.data.report import KINDS, ImageSummary, Problem, Report, summarize
from kubedetect.data.scan import Box, Dataset, Record, scan

__all__ = ["KINDS", "Box", "Dataset", "ImageSummary", "Problem", "Record", "Report", "scan", "summarize"]
