"""Model code of a cropseg MLflow model ("models from code"): MLflow copies this file into the logged
model and runs it when loading, instead of unpickling a Python object. The pipeline itself comes from
the model's artifacts (``pipeline.json``, ``classifier.pkl``) in :meth:`CropsegPipelineModel.load_context`."""

import mlflow

from cropseg.tracking.model import CropsegPipelineModel

mlflow.models.set_model(CropsegPipelineModel())
