"""`/users` routes: register, log in, and the JWKS the gateway verifies tokens with."""
from flask_restx import Namespace, Resource, fields

from mlstudio.common.http_app import body_fields


def register_routes(api, core):
    """Adds the `/users` namespace, bound to `core`, to `api`."""
    ns = Namespace("users", path="/users", description="Accounts and login")
    user_model = ns.model("User", {
        "id": fields.Integer(description="user id", example=1),
        "username": fields.String(example="ann"),
        "email": fields.String(example="ann@example.com"),
    })
    register_body = ns.model("Registration", {
        "username": fields.String(required=True, description="1-150 letters, digits or @.+-_", example="ann"),
        "password": fields.String(required=True, example="s3cret"),
        "email": fields.String(description="email address", example="ann@example.com"),
    })
    login_body = ns.model("Login", {"username": fields.String(required=True, example="ann"),
                                    "password": fields.String(required=True, example="s3cret")})
    token_model = ns.model("Token", {
        "token": fields.String(description="RS256 JWT; send as Authorization: Bearer <token> (on the docs pages: Authorize, "
                                           "then paste it)", example="eyJhbGciOiJSUzI1NiIs..."),
        "user_id": fields.Integer(example=1),
        "username": fields.String(example="ann"),
    })

    # Sign-up, login and the keys need no token (the gateway lets them through without one).
    @ns.route("/")
    @ns.doc(security=[])
    class Users(Resource):
        @ns.expect(register_body)
        @ns.response(201, "Created", user_model)
        @ns.response(409, "Username taken")
        def post(self):
            """Register a user."""
            body = body_fields()
            return core.register(body.get("username"), body.get("password"), body.get("email")), 201

    @ns.route("/auth/")
    @ns.doc(security=[])
    class Auth(Resource):
        @ns.expect(login_body)
        @ns.response(200, "Logged in", token_model)
        @ns.response(401, "Bad credentials")
        def post(self):
            """Log in; answers a token."""
            body = body_fields()
            return core.login(body.get("username"), body.get("password"))

    @ns.route("/.well-known/jwks.json")
    @ns.doc(security=[])
    class Jwks(Resource):
        def get(self):
            """Public keys that verify issued tokens (JWKS)."""
            return core.signing_key.jwks

    api.add_namespace(ns)
