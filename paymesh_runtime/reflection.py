"""gRPC server reflection under both names: grpc.reflection.v1 and v1alpha.

grpcio-reflection (1.x here) serves only `grpc.reflection.v1alpha`. Current
clients (grpcurl, grpcui, Postman) ask `grpc.reflection.v1` first and fall
back on UNIMPLEMENTED; some never fall back. The v1 protocol is v1alpha with
another package name: the same messages field for field, so one servicer
answers both, v1 through a generic handler with v1alpha's (de)serializers.

The v1 service's own descriptor is added to the pool (v1alpha's file with the
package renamed) so that a client can also `describe` what it `list`s.
"""

from __future__ import annotations

from typing import Any, cast

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

V1ALPHA_SERVICE = reflection.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"
METHOD = "ServerReflectionInfo"


def _v1_file() -> descriptor_pb2.FileDescriptorProto:
    """grpc/reflection/v1/reflection.proto, built from the installed v1alpha file."""
    v1alpha = descriptor_pb2.FileDescriptorProto.FromString(reflection_pb2.DESCRIPTOR.serialized_pb)
    old, new = f".{v1alpha.package}.", f".{V1_PACKAGE}."
    v1 = descriptor_pb2.FileDescriptorProto()
    v1.CopyFrom(v1alpha)
    v1.name, v1.package = V1_FILE, V1_PACKAGE
    for message in v1.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old) :]
    for service in v1.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old) :]
            method.output_type = new + method.output_type[len(old) :]
    return v1


def _ensure_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    try:
        pool.FindFileByName(V1_FILE)
    except KeyError:
        pool.AddSerializedFile(_v1_file().SerializeToString())


def enable(server: grpc.aio.Server, service_names: list[str], pool: Any) -> None:
    """Serve reflection for `service_names` (plus both reflection services) from `pool`, under v1 and v1alpha.

    `pool`: a descriptor_pool.DescriptorPool, or an object that answers like one.
    """
    _ensure_v1_descriptor(descriptor_pool.Default())
    servicer = ReflectionServicer([*service_names, V1_SERVICE, V1ALPHA_SERVICE], pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        V1_SERVICE,
        {
            METHOD: grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=cast(Any, reflection_pb2.ServerReflectionResponse.SerializeToString),
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))
