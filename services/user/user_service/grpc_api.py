"""gRPC adapter of the user service."""
from mlstudio.user.v1 import user_pb2, user_pb2_grpc


class UserServicer(user_pb2_grpc.UserServiceServicer):
    def __init__(self, core):
        self.core = core

    def GetUser(self, request, context):
        user = self.core.get_user(request.user_id)
        return user_pb2.GetUserResponse(user=user_pb2.User(id=user["id"], username=user["username"], email=user["email"]))
