"""Export a stage-2 model's whole inference to other runtimes (ONNX: ``diffir export onnx``)."""

from diffir.export.onnx import OnnxRestorer, draw_noise, export_onnx

__all__ = ["OnnxRestorer", "draw_noise", "export_onnx"]
