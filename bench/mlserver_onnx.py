"""A minimal MLServer runtime for one ONNX model: the baseline `bench/serve.py` compares against.

Runs in `.venv-mlserver` (`make mlserver-venv`), not in the project's venv. One default ONNX
Runtime session (CPU), as `dlzoo serve` opens; one input in, every output back, MLServer's codecs.
"""

import onnxruntime
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxModel(MLModel):
    async def load(self) -> bool:
        uri = await get_model_uri(self.settings)
        self._session = onnxruntime.InferenceSession(uri, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [output.name for output in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        batch = NumpyCodec.decode_input(payload.inputs[0])
        results = self._session.run(self._outputs, {self._input: batch})
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(n, r) for n, r in zip(self._outputs, results, strict=True)],
        )
