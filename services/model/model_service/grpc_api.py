"""gRPC adapter of the model service (inference and look-ups for the image and video services)."""
from mlstudio.common.deadlines import Deadline
from mlstudio.model.v1 import model_pb2, model_pb2_grpc


def to_proto(model: dict) -> model_pb2.Model:
    return model_pb2.Model(
        id=model["id"], title=model["title"], description=model["description"], type=model["type"],
        user_id=model["user"], project_id=model["project"], is_public=model["isPublic"], status=model["status"],
        labels=model["labels"], input_shape=model["input_shape"], preprocessing=model["preprocessing"],
        version=model["version"])


class ModelServicer(model_pb2_grpc.ModelServiceServicer):
    def __init__(self, core):
        self.core = core

    def GetModel(self, request, context):
        return model_pb2.GetModelResponse(model=to_proto(self.core.get(request.model_id, request.user_id)))

    def Classify(self, request, context):
        results = self.core.classify(request.model_id, request.user_id, list(request.images), Deadline.of_grpc(context))
        return model_pb2.ClassifyResponse(results=[model_pb2.Classification(label=r.label, score=r.score) for r in results])

    def Detect(self, request, context):
        results = self.core.detect(request.model_id, request.user_id, list(request.images), request.threshold,
                                   Deadline.of_grpc(context))
        return model_pb2.DetectResponse(results=[
            model_pb2.ImageDetections(boxes=[
                model_pb2.Box(label=d.label, score=d.score, x1=d.x1, y1=d.y1, x2=d.x2, y2=d.y2) for d in found])
            for found in results])

    def DeleteProjectData(self, request, context):
        return model_pb2.DeleteProjectDataResponse(deleted=self.core.delete_project_data(request.project_id))
