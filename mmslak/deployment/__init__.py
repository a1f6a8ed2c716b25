"""Deployment: ONNX export of models using mmslak's ops, in standard ONNX operators only."""
from .onnx import (CUSTOM_OPS, DEFAULT_OPSET, EXPORTERS, export_onnx, onnx_op_types, onnx_translation_table,
                   onnxruntime_session, register_torchscript_symbolics, relative_error)
from .wrappers import PARTS, default_part, exportable, model_task

__all__ = [
    'CUSTOM_OPS', 'DEFAULT_OPSET', 'EXPORTERS', 'PARTS', 'default_part', 'export_onnx', 'exportable', 'model_task',
    'onnx_op_types', 'onnx_translation_table', 'onnxruntime_session', 'register_torchscript_symbolics',
    'relative_error'
]
