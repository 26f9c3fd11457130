"""The committed gRPC code is what `make proto` generates, and the contract follows its rules."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from google.protobuf import descriptor_pb2

from vpool.v1 import signer_pb2

ROOT = Path(__file__).resolve().parents[1]
PROTOS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto" / "vpool" / "v1").glob("*.proto"))
GENERATED_GLOB = "*_pb2*.py*"


def protoc(*args: str) -> None:
    cmd = [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", *args, *PROTOS]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)


def generate(out: Path) -> dict[str, bytes]:
    out.mkdir(exist_ok=True)
    protoc(f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}")
    return {p.name: p.read_bytes() for p in sorted((out / "vpool" / "v1").glob(GENERATED_GLOB))}


def test_committed_generated_code_matches_the_protos(tmp_path: Path) -> None:
    committed = {p.name: p.read_bytes() for p in (ROOT / "vpool" / "v1").glob(GENERATED_GLOB)}
    assert generate(tmp_path) == committed, "generated code is stale: run `make proto`"


def test_generation_is_byte_for_byte_reproducible(tmp_path: Path) -> None:
    assert generate(tmp_path / "a") == generate(tmp_path / "b")


def test_signer_service_offers_the_contract_rpcs() -> None:
    service = signer_pb2.DESCRIPTOR.services_by_name["SignerService"]
    methods = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    assert methods == {
        "GetInfo": ("GetInfoRequest", "SignerInfo"),
        "GetXpub": ("GetXpubRequest", "GetXpubResponse"),
        "RegisterSeries": ("RegisterSeriesRequest", "RegisterSeriesResponse"),
        "DisplayAddress": ("DisplayAddressRequest", "DisplayAddressResponse"),
        "SignRound": ("SignRoundRequest", "SignRoundResponse"),
        "RegisterDepositAddress": (
            "RegisterDepositAddressRequest",
            "RegisterDepositAddressResponse",
        ),
        "AcknowledgeDeposits": ("AcknowledgeDepositsRequest", "AcknowledgeDepositsResponse"),
    }


def descriptor_set(tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path / "contract.pb"
    protoc(f"--descriptor_set_out={out}", "--include_source_info")
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def enums(
    file: descriptor_pb2.FileDescriptorProto,
) -> Iterator[descriptor_pb2.EnumDescriptorProto]:
    yield from file.enum_type
    stack = list(file.message_type)
    while stack:
        message = stack.pop()
        yield from message.enum_type
        stack.extend(message.nested_type)


def test_every_enum_starts_with_unspecified(tmp_path: Path) -> None:
    for file in descriptor_set(tmp_path).file:
        for enum in enums(file):
            assert enum.value[0].number == 0, enum.name
            assert enum.value[0].name.endswith("_UNSPECIFIED"), enum.name


# Source locations are paths of field numbers in FileDescriptorProto: 4 = message_type,
# 5 = enum_type, 6 = service; inside a message 2 = field, 3 = nested_type, 4 = enum_type;
# inside a service 2 = method. Enum values are not listed: their names say what they are.
def documented_elements(
    file: descriptor_pb2.FileDescriptorProto,
) -> Iterator[tuple[str, tuple[int, ...]]]:
    def message(
        m: descriptor_pb2.DescriptorProto, path: tuple[int, ...]
    ) -> Iterator[tuple[str, tuple[int, ...]]]:
        yield m.name, path
        for i, f in enumerate(m.field):
            yield f"{m.name}.{f.name}", (*path, 2, i)
        for i, nested in enumerate(m.nested_type):
            yield from message(nested, (*path, 3, i))
        for i, e in enumerate(m.enum_type):
            yield f"{m.name}.{e.name}", (*path, 4, i)

    for i, m in enumerate(file.message_type):
        yield from message(m, (4, i))
    for i, e in enumerate(file.enum_type):
        yield e.name, (5, i)
    for i, s in enumerate(file.service):
        yield s.name, (6, i)
        for j, rpc in enumerate(s.method):
            yield f"{s.name}.{rpc.name}", (6, i, 2, j)


def test_every_message_field_enum_and_rpc_is_documented(tmp_path: Path) -> None:
    undocumented = []
    for file in descriptor_set(tmp_path).file:
        comments = {tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location}
        for name, path in documented_elements(file):
            if not comments.get(path, "").strip():
                undocumented.append(f"{file.name}: {name}")
    assert undocumented == []
