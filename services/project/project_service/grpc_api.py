"""gRPC adapter of the project service."""
from mlstudio.project.v1 import project_pb2, project_pb2_grpc


def to_proto(project: dict) -> project_pb2.Project:
    return project_pb2.Project(
        id=project["id"], title=project["title"], description=project["description"], type=project["type"],
        user_id=project["user"], location=project["location"], create_time=project["create_time"],
        threshold=project["threshold"], review_threshold=project["review_threshold"])


class ProjectServicer(project_pb2_grpc.ProjectServiceServicer):
    def __init__(self, core):
        self.core = core

    def GetProject(self, request, context):
        return project_pb2.GetProjectResponse(project=to_proto(self.core.get(request.project_id, request.user_id)))

    def ListProjects(self, request, context):
        return project_pb2.ListProjectsResponse(projects=[to_proto(p) for p in self.core.list(request.user_id)])
