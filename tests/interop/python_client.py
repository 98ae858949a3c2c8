#!/usr/bin/env python3
"""An independent gRPC client (Python, grpcio) built from the project's .proto files.

Usage: python_client.py PROTO_DIR TARGET CA_PEM CASE [CERT_PEM KEY_PEM]
  CASE is one of: no-cert, cert (prints the gRPC status code name of a Heartbeat call, or OK).
TARGET is host:port; the TLS server name is taken as "localhost".
"""
import importlib
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc


def main():
    proto_dir, target, ca_path, case = sys.argv[1:5]
    out = tempfile.mkdtemp()
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--python_out={out}", f"--grpc_python_out={out}",
                      "invigilator/v1/agent.proto"])
    if rc != 0:
        sys.exit(f"protoc failed: {rc}")
    sys.path.insert(0, out)
    pb = importlib.import_module("invigilator.v1.agent_pb2")
    rpc = importlib.import_module("invigilator.v1.agent_pb2_grpc")

    ca = open(ca_path, "rb").read()
    if case == "no-cert":
        creds = grpc.ssl_channel_credentials(root_certificates=ca)
    else:
        cert, key = (open(p, "rb").read() for p in sys.argv[5:7])
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    channel = grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", "localhost")])
    stub = rpc.TelemetryStub(channel)
    try:
        stub.Heartbeat(pb.HeartbeatRequest(hostname="python-client"), timeout=10)
        print("OK")
    except grpc.RpcError as e:
        print(e.code().name, e.details())


if __name__ == "__main__":
    main()
