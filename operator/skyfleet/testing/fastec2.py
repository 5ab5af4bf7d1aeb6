"""An EC2 API for scale runs: indexed, in memory, standard library only.

moto's EC2 server is the fidelity reference, but its cost grows faster than the fleet: at 1,000
instances one tag-filtered DescribeInstances takes seconds (bench/RESULTS.md, "EC2
emulators"). This emulator answers the subset of the EC2 Query API that Skyfleet's EC2 adapter,
libcloud's EC2 driver and the connector tests use, with every instance indexed by id, by tag
(key and key/value) and by state, so a tag-filtered DescribeInstances costs in proportion to its
answer, not to the account. It is held to the same connector tests as moto
(tests/connector/conftest.py runs them against both) so the two cannot drift apart.

Usage mirrors ``skyfleet.testing.ec2emulator``::

    with FastEC2() as emu:              # in this process, a background thread
        url = emu.endpoint
    proc = FastEC2Process(pending_delay=2.0)   # in a child process of its own
    proc.seed(1000, {"skyfleet.io/cluster-id": "c1"}); proc.reset(); proc.stop()

    python -m skyfleet.testing.fastec2 --port 5000 [--pending-delay 2] [--no-client-token-dedup]

Behaviour, as on EC2:

* regions: the region comes from the SigV4 credential scope (header or query), else from a
  ``ec2.<region>.amazonaws.com`` Host, else us-east-1; each region is a separate account view.
* responses carry ``xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"``; errors are EC2's
  ``<Response><Errors><Error><Code>/<Message>`` documents with EC2's codes and HTTP 400.
  Signatures are accepted without checking (as moto does).
* RunInstances deduplicates ClientToken per region (same token and parameters: the original
  reservation; other parameters: ``IdempotentParameterMismatch``); ``client_token_dedup=False``
  emulates a cloud with no idempotency token.
* instances go pending -> running after ``pending_delay`` (default 0), stopping -> stopped and
  shutting-down -> terminated after their delays, and stay visible as terminated for
  ``terminated_ttl`` seconds (EC2: about an hour).
* DescribeInstances pages by reservation: MaxResults 5-1000, an opaque NextToken; without
  MaxResults (and without instance ids) it answers ``unpaged_page_size`` reservations (100, as
  moto does) plus a NextToken, so a client that ignores NextToken is caught in tests.

Deliberately closer to EC2 than moto is (each is a request moto accepts and EC2 refuses):
unknown or malformed image ids, MaxResults outside 5-1000, changing the instance type of an
instance that is not stopped (``IncorrectInstanceState``), unknown filters
(``InvalidParameterValue``), unknown actions (``InvalidAction``), a second AMI of a name the
account uses in that region (``InvalidAMIName.Duplicate``), a malformed AMI name
(``InvalidAMIName.Malformed``: 3-128 characters of EC2's set), deregistering, sharing or reading
the launch permissions of an image the account does not own (moto lets anyone change a catalogue
image; ``DescribeImageAttribute``/``ModifyImageAttribute`` answer ``AuthFailure: Not authorized
for image:ami-...`` as EC2 does). Network interfaces, security groups and addresses exist only
as far as responses need them (DescribeAddresses is always empty).

Images: moto's default catalogue (moto/ec2/resources/amis.json: same ids, owners and names, one
fixed creation date) in every region, but not the latest Amazon Linux and ECS images moto adds
per region. CreateImage and CopyImage make images of this account with snapshots of their own,
and as on EC2 (not moto):

* ``TagSpecification`` tags the image and, with ResourceType ``snapshot``, its snapshots in the
  same request (moto fails on snapshot tags); CopyImage takes ``TagSpecification`` too, and
  ``CopyImageTags=true`` carries the source's tags over.
* CopyImage deduplicates its ``ClientToken`` per region (moto makes another copy per retry):
  the same token and parameters answer the first copy, other parameters
  ``IdempotentParameterMismatch``.
* snapshot descriptions are EC2's: ``Created by CreateImage(i-...) for ami-...`` and
  ``Copied for DestinationAmi ami-... from SourceAmi ami-... for SourceSnapshot snap-...``;
  a snapshot stays ``pending`` while its image does.
* DeregisterImage keeps the snapshots; DeleteSnapshot refuses one a registered image still uses
  (``InvalidSnapshot.InUse``) and deletes it afterwards. A deregistered image's id answers
  ``InvalidAMIID.NotFound`` at once (EC2 shows it briefly, then answers empty, then NotFound).
* DescribeSnapshots shows only the account's own snapshots (moto also lists one made-up
  snapshot per catalogue image as the account's); CreateSnapshot answers ``pending`` and
  completes at once.
* Launch permissions: ``ModifyImageAttribute`` (``LaunchPermission.Add|Remove.N.UserId|Group``,
  or the older ``OperationType`` with ``UserId.N``/``UserGroup.N``) and
  ``DescribeImageAttribute`` (launchPermission, description, blockDeviceMapping, productCodes).
* GetConsoleOutput answers a boot log (base64, as EC2 sends it) once an instance has left
  ``pending``; before that it answers no output, as EC2 does for a VM that has not booted.

Volumes: CreateVolume (by size or from a snapshot) makes a volume to snapshot; DescribeVolumes
is not answered. An instance's root volume can be snapshotted too.

Control endpoints (loopback, no auth): ``POST /moto-api/reset`` (the same path as the moto
emulator, so ``EmulatorProcess.reset`` works on both), ``POST /skyfleet-emulator/seed`` and
``POST /skyfleet-emulator/settings`` (JSON bodies, see ``seed`` and ``Settings``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import fnmatch
import hashlib
import heapq
import json
import random
import re
import threading
import time
import traceback
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

from skyfleet.testing.ec2emulator import RESET_PATH, SEED_PATH, EmulatorProcess
from skyfleet.testing.net import LoopbackHTTPServer

__all__ = ["FastEC2", "FastEC2Backend", "FastEC2Process", "Settings"]

SETTINGS_PATH = "/skyfleet-emulator/settings"
NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
ACCOUNT_ID = "123456789012"  # moto's default account: images made here show this owner
DEFAULT_REGION = "us-east-1"

_STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_SIGV4_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/,\s]+)/ec2/")
_HOST_REGION = re.compile(r"^ec2\.([a-z0-9-]+)\.amazonaws\.com")
_INSTANCE_ID = re.compile(r"^i-([0-9a-f]{8}|[0-9a-f]{17})$")
_IMAGE_ID = re.compile(r"^ami-[0-9a-z]{8,17}$")
_SNAPSHOT_ID = re.compile(r"^snap-([0-9a-f]{8}|[0-9a-f]{17})$")
_VOLUME_ID = re.compile(r"^vol-([0-9a-f]{8}|[0-9a-f]{17})$")
_IMAGE_NAME = re.compile(r"^[A-Za-z0-9()\[\] ./'@_-]{3,128}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_LAUNCH_PERMISSION = re.compile(r"^LaunchPermission\.(Add|Remove)\.\d+\.(UserId|Group)$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
# Parameters that differ between retries of one logical RunInstances (signature, clock).
_VOLATILE = re.compile(r"^(Signature.*|AWSAccessKeyId|Timestamp|Expires|X-Amz-.*|Version|Action)$")
_PAGE_MIN, _PAGE_MAX = 5, 1000
_ZONES = {"us-east-1": "abcdef", "us-west-2": "abcd", "ap-northeast-1": "acd"}  # others: a, b, c
_STOCK_CREATED = "2017-11-03T00:00:00.000Z"  # one date for all: name lookups tie-break on name, as on moto

# moto 5.2's default AMI catalogue (moto/ec2/resources/amis.json): id|owner|name|platform|architecture.
_STOCK_TABLE = """
ami-03cf127a|801119661308|Windows_Server-2016-English-Nano-Base-2017.10.13|windows|x86_64
ami-12c6146b|801119661308|Windows_Server-2008-R2_SP1-English-64Bit-Base-2017.10.13|windows|x86_64
ami-1812c061|801119661308|Windows_Server-2016-English-Full-SQL_2016_SP1_Standard-2017.10.13|windows|x86_64
ami-1e749f67|099720109477|ubuntu/images/hvm-ssd/ubuntu-trusty-14.04-amd64-server-20170727||x86_64
ami-1ecc1e67|801119661308|Windows_Server-2012-R2_RTM-English-64Bit-Base-2017.10.13|windows|x86_64
ami-1f12c066|801119661308|Windows_Server-2016-English-Full-SQL_2016_SP1_Express-2017.10.13|windows|x86_64
ami-24f3215d|801119661308|Windows_Server-2012-R2_RTM-English-64Bit-SQL_2014_SP2_Web-2017.10.13|windows|x86_64
ami-35e92e4c|013907871322|suse-sles-12-sp3-v20170907-hvm-ssd-x86_64||x86_64
ami-3bf32142|801119661308|Windows_Server-2012-R2_RTM-English-64Bit-SQL_2016_SP1_Express-2017.10.13|windows|x86_64
ami-3df32144|801119661308|Windows_Server-2012-R2_RTM-English-64Bit-SQL_2016_SP1_Enterprise-2017.10.13|windows|x86_64
ami-56ec3e2f|801119661308|Windows_Server-2016-English-Full-SQL_2017_Express-2017.10.13|windows|x86_64
ami-61db0918|801119661308|Windows_Server-2003-R2_SP2-English-64Bit-Base-2017.10.13|windows|x86_64
ami-6ef02217|801119661308|Windows_Server-2012-R2_RTM-English-64Bit-SQL_2016_SP1_Web-2017.10.13|windows|x86_64
ami-760aaa0f|137112412989|amzn-ami-hvm-2017.09.1.20171103-x86_64-gp2||x86_64
ami-77ed3f0e|801119661308|Windows_Server-2016-English-Full-SQL_2016_SP1_Enterprise-2017.10.13|windows|x86_64
ami-785db401|099720109477|ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-20170721||x86_64
ami-8104a4f8|137112412989|amzn-ami-pv-2017.09.1.20171103-x86_64-ebs||x86_64
ami-84ee3cfd|801119661308|Windows_Server-2016-English-Full-SQL_2017_Web-2017.10.13|windows|x86_64
ami-86ee3cff|801119661308|Windows_Server-2016-English-Full-SQL_2017_Standard-2017.10.13|windows|x86_64
ami-999844e0|898082745236|Deep Learning AMI Amazon Linux - 3.3_Oct2017||x86_64
ami-9b32e8e2|898082745236|Ubuntu CUDA9 DLAMI with MXNet/TF/Caffe2||x86_64
ami-a9cc1ed0|801119661308|Windows_Server-2012-R2_RTM-English-64Bit-SQL_2014_SP2_Standard-2017.10.13|windows|x86_64
ami-afee3cd6|801119661308|Windows_Server-2016-English-Full-SQL_2016_SP1_Web-2017.10.13|windows|x86_64
ami-b7e93bce|801119661308|Windows_Server-2016-English-Full-Base-2017.10.13|windows|x86_64
ami-bb9a6bc2|309956199498|RHEL-7.4_HVM_GA-20170808-x86_64-2-Hourly2-GP2||x86_64
ami-bceb39c5|801119661308|Windows_Server-2016-English-Full-Containers-2017.10.13|windows|x86_64
ami-c2ff2dbb|801119661308|Windows_Server-2012-RTM-English-64Bit-Base-2017.10.13|windows|x86_64
ami-c6f321bf|801119661308|Windows_Server-2012-R2_RTM-English-64Bit-SQL_2014_SP2_Express-2017.10.13|windows|x86_64
ami-d1cb19a8|801119661308|Windows_Server-2008-SP2-English-64Bit-Base-2017.10.13|windows|x86_64
ami-dca37ea5|898082745236|Deep Learning AMI Ubuntu Linux - 2.4_Oct2017||x86_64
ami-f0e83a89|801119661308|Windows_Server-2016-English-Full-SQL_2017_Enterprise-2017.10.13|windows|x86_64
ami-f4cf1d8d|801119661308|Windows_Server-2012-R2_RTM-English-64Bit-SQL_2016_SP1_Standard-2017.10.13|windows|x86_64
ami-f8e54081|898082745236|CUDA9ClassicAmazonLinuxDLAMIwithMXNetTensorflowandCaffe2 ||x86_64
ami-fa7cdd89|013907871322|suse-sles-11-sp4-v20151207-pv-ssd-x86_64||x86_64
ami-ekswin|801119661308|Windows_Server-2019-English-Core-EKS_Optimized|windows|x86_64
ami-ekslinux|801119661308|amazon-eks-node-linux||x86_64
ami-00a36856283d67c39|137112412989|amzn-ami-vpc-nat-2018.03.0.20210721.0-x86_64-ebs||x86_64
ami-000c540e28953ace2|137112412989|amzn-ami-minimal-hvm-2018.03.0.20181129-x86_64-ebs||x86_64
ami-04681a1dbd79675a5|137112412989|amzn2-ami-hvm-2.0.20180810-x86_64-gp2||x86_64
ami-04681a1dbd79675b6|137112412989|amzn-ami-minimal-pv-2.0.20180810-x86_64-gp2||x86_64
ami-076f415166b04f5fe|137112412989|al2022-ami-2022.0.20220728.1-kernel-5.15-x86_64||x86_64
ami-0e9271c829888680e|137112412989|al2022-ami-2022.0.20220728.1-kernel-5.15-arm64||arm64
ami-0b301ce3ce347599c|137112412989|al2022-ami-2022.0.20220728.1-kernel-5.15-x86_64||x86_64
ami-0b301ce3ce3475r4f|137112412989|product_codes_test||x86_64
"""
_AMAZON_OWNERS = {"801119661308", "137112412989", "898082745236", "099720109477", "013907871322", "309956199498"}


class EC2Error(Exception):
    """An answer in EC2's error document: ``code`` is what clients switch on."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass
class Settings:
    """What the emulated cloud does; every field can change at runtime (``configure``)."""

    pending_delay: float = 0.0  # seconds a new or started instance stays pending
    stop_delay: float = 0.0  # stopping -> stopped
    shutdown_delay: float = 0.0  # shutting-down -> terminated
    terminated_ttl: float = 3600.0  # terminated instances stay visible this long, as on EC2
    image_delay: float = 0.0  # CreateImage/CopyImage: pending -> available
    client_token_dedup: bool = True  # False: a cloud without idempotency tokens
    unpaged_page_size: int = 100  # reservations per DescribeInstances page without MaxResults

    def update(self, changes: Mapping[str, Any]) -> None:
        known = {f.name: f for f in dataclasses.fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown setting {name!r}; known: {sorted(known)}")
            current = getattr(self, name)
            if isinstance(current, bool):
                setattr(self, name, bool(value))
            elif isinstance(current, int):
                setattr(self, name, int(value))
            else:
                setattr(self, name, float(value))


# -- the model ------------------------------------------------------------------------------


def _iso(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _tag_set(tags: Mapping[str, str]) -> str:
    if not tags:
        return ""
    items = "".join(f"<item><key>{escape(k)}</key><value>{escape(v)}</value></item>" for k, v in tags.items())
    return f"<tagSet>{items}</tagSet>"


class Instance:
    __slots__ = (
        "architecture",
        "client_token",
        "id",
        "image_id",
        "instance_type",
        "launch_index",
        "launched",
        "platform",
        "private_ip",
        "public_ip",
        "reason",
        "reservation",
        "seq",
        "state",
        "tags",
        "user_data",
        "volume_id",
        "xml",
        "zone",
    )

    def __init__(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self, name, value)
        self.xml: str | None = None

    id: str
    reservation: str
    seq: int
    launch_index: int
    image_id: str
    instance_type: str
    zone: str
    state: str
    launched: float
    private_ip: str
    public_ip: str
    tags: dict[str, str]
    client_token: str
    user_data: str | None
    architecture: str
    platform: str
    reason: str
    volume_id: str


@dataclass
class Image:
    id: str
    owner: str
    name: str
    platform: str
    architecture: str
    created: str
    public: bool
    state: str = "available"
    description: str = ""
    source_instance: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # The EBS snapshots behind the block devices (the account's own, for images made here).
    snapshots: tuple[str, ...] = ()
    # Accounts granted launch permission (ModifyImageAttribute); ``public`` is the group "all".
    launch_users: set[str] = field(default_factory=set)

    def snapshot_ids(self) -> tuple[str, ...]:
        # A catalogue image's snapshot belongs to its publisher: an id that stays the same, no more.
        return self.snapshots or ("snap-" + hashlib.sha256(self.id.encode()).hexdigest()[:17],)

    def xml(self) -> str:
        alias = "<imageOwnerAlias>amazon</imageOwnerAlias>" if self.owner in _AMAZON_OWNERS else ""
        platform = f"<platform>{self.platform}</platform>" if self.platform else ""
        description = f"<description>{escape(self.description)}</description>" if self.description else ""
        devices = "".join(
            f"<item><deviceName>/dev/xvd{chr(ord('a') + n)}</deviceName>"
            f"<ebs><snapshotId>{snapshot}</snapshotId><volumeSize>8</volumeSize>"
            "<deleteOnTermination>true</deleteOnTermination><volumeType>gp2</volumeType>"
            "<encrypted>false</encrypted></ebs></item>"
            for n, snapshot in enumerate(self.snapshot_ids())
        )
        return (
            f"<item><imageId>{self.id}</imageId><imageLocation>{self.owner}/{escape(self.name)}</imageLocation>"
            f"<imageState>{self.state}</imageState><imageOwnerId>{self.owner}</imageOwnerId>"
            f"<creationDate>{self.created}</creationDate><isPublic>{str(self.public).lower()}</isPublic>"
            f"<architecture>{self.architecture}</architecture><imageType>machine</imageType>{platform}"
            f"<name>{escape(self.name)}</name>{description}{alias}<rootDeviceType>ebs</rootDeviceType>"
            f"<rootDeviceName>/dev/xvda</rootDeviceName><blockDeviceMapping>{devices}</blockDeviceMapping>"
            "<virtualizationType>hvm</virtualizationType><hypervisor>xen</hypervisor>"
            f"{_tag_set(self.tags)}</item>"
        )


@dataclass
class Snapshot:
    id: str
    volume_id: str
    size: int
    description: str
    started: str
    state: str = "completed"
    tags: dict[str, str] = field(default_factory=dict)
    image_id: str | None = None  # the registered image that uses it: EC2 refuses to delete it then

    def fields(self, state: str | None = None) -> str:
        """The snapshot's elements; ``state`` overrides the stored one (CreateSnapshot's answer)."""
        state = state or self.state
        progress = "100%" if state == "completed" else "0%"
        return (
            f"<snapshotId>{self.id}</snapshotId><volumeId>{self.volume_id}</volumeId>"
            f"<status>{state}</status><startTime>{self.started}</startTime><progress>{progress}</progress>"
            f"<ownerId>{ACCOUNT_ID}</ownerId><volumeSize>{self.size}</volumeSize>"
            f"<description>{escape(self.description)}</description><encrypted>false</encrypted>"
            f"<storageTier>standard</storageTier>{_tag_set(self.tags)}"
        )

    def xml(self) -> str:
        return f"<item>{self.fields()}</item>"


@dataclass
class Volume:
    """A volume made by CreateVolume: it exists to be snapshotted (instances' root volumes are
    not Volume objects; ``Region.root_volumes`` finds their instance)."""

    id: str
    size: int
    zone: str
    snapshot_id: str
    volume_type: str
    created: str
    tags: dict[str, str] = field(default_factory=dict)


_STOCK = {
    ami: Image(ami, owner, name, platform, arch, _STOCK_CREATED, public=True)
    for ami, owner, name, platform, arch in (line.split("|") for line in _STOCK_TABLE.strip().splitlines())
}


class Region:
    """One region's resources and the indexes that keep every query proportional to its answer."""

    def __init__(self, name: str, rng: random.Random) -> None:
        self.name = name
        letters = _ZONES.get(name, "abc")
        self.zones = [f"{name}{letter}" for letter in letters]
        self.vpc = f"vpc-{rng.getrandbits(68):017x}"
        self.subnets = {zone: f"subnet-{rng.getrandbits(68):017x}" for zone in self.zones}
        self.group = f"sg-{rng.getrandbits(68):017x}"
        internal = "ec2.internal" if name == "us-east-1" else f"{name}.compute.internal"
        public = "compute-1.amazonaws.com" if name == "us-east-1" else f"{name}.compute.amazonaws.com"
        self.internal_domain, self.public_domain = internal, public
        self.instances: dict[str, Instance] = {}
        self.reservations: dict[int, list[Instance]] = {}
        self.by_tag: dict[tuple[str, str], set[str]] = {}
        self.by_key: dict[str, set[str]] = {}
        self.by_state: dict[str, set[str]] = {state: set() for state in _STATE_CODES}
        self.tokens: dict[str, tuple[str, int]] = {}
        self.images: dict[str, Image] = {}
        self.image_names: dict[str, str] = {}  # AMI names are unique per account and region
        self.image_tokens: dict[str, tuple[str, str]] = {}  # CopyImage ClientToken: (fingerprint, image id)
        self.snapshots: dict[str, Snapshot] = {}
        self.volumes: dict[str, Volume] = {}
        self.root_volumes: dict[str, str] = {}  # volume id -> instance id
        # (due, sequence, resource id, from state): transitions that happen by themselves.
        self.timers: list[tuple[float, int, str, str]] = []
        # (wall-clock time, instance id): terminated instances to forget, soonest first.
        self.purge: list[tuple[float, str]] = []

    # -- indexes ---------------------------------------------------------------------------
    def index_tag(self, inst: Instance, key: str, value: str) -> None:
        old = inst.tags.get(key)
        if old is not None:
            self._unindex_pair(inst.id, key, old)
        inst.tags[key] = value
        self.by_tag.setdefault((key, value), set()).add(inst.id)
        self.by_key.setdefault(key, set()).add(inst.id)
        inst.xml = None

    def unindex_tag(self, inst: Instance, key: str) -> None:
        value = inst.tags.pop(key)
        self._unindex_pair(inst.id, key, value)
        members = self.by_key.get(key)
        if members is not None:
            members.discard(inst.id)
            if not members:
                del self.by_key[key]
        inst.xml = None

    def _unindex_pair(self, instance_id: str, key: str, value: str) -> None:
        members = self.by_tag.get((key, value))
        if members is not None:
            members.discard(instance_id)
            if not members:
                del self.by_tag[(key, value)]

    def set_state(self, inst: Instance, state: str) -> None:
        self.by_state[inst.state].discard(inst.id)
        self.by_state[state].add(inst.id)
        inst.state = state
        inst.xml = None

    def forget(self, inst: Instance) -> None:
        for key in list(inst.tags):
            self.unindex_tag(inst, key)
        self.by_state[inst.state].discard(inst.id)
        del self.instances[inst.id]
        self.root_volumes.pop(inst.volume_id, None)
        siblings = self.reservations.get(inst.seq)
        if siblings is not None:
            siblings.remove(inst)
            if not siblings:
                del self.reservations[inst.seq]

    # -- rendering -------------------------------------------------------------------------
    def instance_xml(self, inst: Instance) -> str:
        if inst.xml is not None:
            return inst.xml
        state = inst.state
        launched = _iso(inst.launched)
        dotted = inst.private_ip.replace(".", "-")
        public = ""
        if state in ("pending", "running"):
            dashed = inst.public_ip.replace(".", "-")
            public = f"<dnsName>ec2-{dashed}.{self.public_domain}</dnsName><ipAddress>{inst.public_ip}</ipAddress>"
        else:
            public = "<dnsName/>"
        devices = ""
        if state != "terminated":
            devices = (
                "<item><deviceName>/dev/xvda</deviceName><ebs>"
                f"<volumeId>{inst.volume_id}</volumeId><status>attached</status><attachTime>{launched}</attachTime>"
                "<deleteOnTermination>true</deleteOnTermination></ebs></item>"
            )
        reason = ""
        if state in ("stopping", "stopped", "shutting-down", "terminated"):
            reason = (
                "<stateReason><code>Client.UserInitiatedShutdown</code>"
                "<message>Client.UserInitiatedShutdown: User initiated shutdown</message></stateReason>"
            )
        platform = f"<platform>{inst.platform}</platform>" if inst.platform else ""
        user_reason = f"<reason>{inst.reason}</reason>" if inst.reason else "<reason/>"
        inst.xml = (
            f"<item><instanceId>{inst.id}</instanceId><imageId>{inst.image_id}</imageId>"
            f"<instanceState><code>{_STATE_CODES[state]}</code><name>{state}</name></instanceState>"
            f"<privateDnsName>ip-{dotted}.{self.internal_domain}</privateDnsName>{public}{user_reason}"
            f"<amiLaunchIndex>{inst.launch_index}</amiLaunchIndex><productCodes/>"
            f"<instanceType>{inst.instance_type}</instanceType><launchTime>{launched}</launchTime>"
            f"<placement><availabilityZone>{inst.zone}</availabilityZone><groupName/><tenancy>default</tenancy>"
            f"</placement>{platform}<monitoring><state>disabled</state></monitoring>"
            f"<subnetId>{self.subnets[inst.zone]}</subnetId><vpcId>{self.vpc}</vpcId>"
            f"<privateIpAddress>{inst.private_ip}</privateIpAddress><sourceDestCheck>true</sourceDestCheck>"
            f"<groupSet><item><groupId>{self.group}</groupId><groupName>default</groupName></item></groupSet>"
            f"{reason}<architecture>{inst.architecture}</architecture><rootDeviceType>ebs</rootDeviceType>"
            f"<rootDeviceName>/dev/xvda</rootDeviceName><blockDeviceMapping>{devices}</blockDeviceMapping>"
            f"<virtualizationType>hvm</virtualizationType><clientToken>{escape(inst.client_token)}</clientToken>"
            f"{_tag_set(inst.tags)}<hypervisor>xen</hypervisor><ebsOptimized>false</ebsOptimized></item>"
        )
        return inst.xml

    def reservation_head(self, inst: Instance) -> str:
        return f"<reservationId>{inst.reservation}</reservationId><ownerId>{ACCOUNT_ID}</ownerId><groupSet/>"


# -- filters --------------------------------------------------------------------------------

Predicate = Callable[[Instance], bool]


def _matcher(values: Sequence[str]) -> Callable[[str | None], bool]:
    """EC2 filter values: exact, or ``*``/``?`` wildcards."""
    exact = {v for v in values if "*" not in v and "?" not in v}
    patterns = [re.compile(fnmatch.translate(v)) for v in values if v not in exact]

    def match(value: str | None) -> bool:
        if value is None:
            return False
        return value in exact or any(p.match(value) for p in patterns)

    return match


def _compose(match: Callable[[str | None], bool], getter: Callable[[str], str]) -> Callable[[str], bool]:
    return lambda value: match(getter(value))


def _has_wildcards(values: Sequence[str]) -> bool:
    return any("*" in v or "?" in v for v in values)


_ATTRIBUTE_FILTERS: dict[str, Callable[[Instance], str]] = {
    "instance-state-name": lambda i: i.state,
    "instance-state-code": lambda i: str(_STATE_CODES[i.state]),
    "instance-id": lambda i: i.id,
    "instance-type": lambda i: i.instance_type,
    "image-id": lambda i: i.image_id,
    "availability-zone": lambda i: i.zone,
    "reservation-id": lambda i: i.reservation,
    "client-token": lambda i: i.client_token,
    "private-ip-address": lambda i: i.private_ip,
    "architecture": lambda i: i.architecture,
}


def _instance_predicate(name: str, values: Sequence[str]) -> Predicate:
    match = _matcher(values)
    if name.startswith("tag:"):
        key = name[4:]
        return lambda i: match(i.tags.get(key))
    if name == "tag-key":
        return lambda i: any(match(k) for k in i.tags)
    if name == "tag-value":
        return lambda i: any(match(v) for v in i.tags.values())
    getter = _ATTRIBUTE_FILTERS.get(name)
    if getter is None:
        raise EC2Error("InvalidParameterValue", f"The filter '{name}' is invalid")
    return lambda i: match(getter(i))


_IMAGE_FILTERS: dict[str, Callable[[Image], str | None]] = {
    "name": lambda i: i.name,
    "image-id": lambda i: i.id,
    "owner-id": lambda i: i.owner,
    "owner-alias": lambda i: "amazon" if i.owner in _AMAZON_OWNERS else None,
    "state": lambda i: i.state,
    "architecture": lambda i: i.architecture,
    "platform": lambda i: i.platform or None,
    "is-public": lambda i: str(i.public).lower(),
    "image-type": lambda i: "machine",
}


def _image_predicate(name: str, values: Sequence[str]) -> Callable[[Image], bool]:
    match = _matcher(values)
    if name.startswith("tag:"):
        key = name[4:]
        return lambda i: match(i.tags.get(key))
    getter = _IMAGE_FILTERS.get(name)
    if getter is None:
        raise EC2Error("InvalidParameterValue", f"The filter '{name}' is invalid")
    return lambda i: match(getter(i))


_SNAPSHOT_FILTERS: dict[str, Callable[[Snapshot], str | None]] = {
    "snapshot-id": lambda s: s.id,
    "volume-id": lambda s: s.volume_id,
    "status": lambda s: s.state,
    "description": lambda s: s.description,
    "owner-id": lambda s: ACCOUNT_ID,
    "volume-size": lambda s: str(s.size),
    "start-time": lambda s: s.started,
    "progress": lambda s: "100%" if s.state == "completed" else "0%",
    "encrypted": lambda s: "false",
    "storage-tier": lambda s: "standard",
}


def _snapshot_predicate(name: str, values: Sequence[str]) -> Callable[[Snapshot], bool]:
    match = _matcher(values)
    if name.startswith("tag:"):
        key = name[4:]
        return lambda s: match(s.tags.get(key))
    if name == "tag-key":
        return lambda s: any(match(k) for k in s.tags)
    getter = _SNAPSHOT_FILTERS.get(name)
    if getter is None:
        raise EC2Error("InvalidParameterValue", f"The filter '{name}' is invalid")
    return lambda s: match(getter(s))


def _filters(params: Mapping[str, str]) -> list[tuple[str, list[str]]]:
    found: dict[int, tuple[str, list[tuple[int, str]]]] = {}
    for key, value in params.items():
        if not key.startswith("Filter."):
            continue
        parts = key.split(".")
        if len(parts) == 3 and parts[2] == "Name" and parts[1].isdigit():
            entry = found.setdefault(int(parts[1]), ("", []))
            found[int(parts[1])] = (value, entry[1])
        elif len(parts) == 4 and parts[2] == "Value" and parts[1].isdigit() and parts[3].isdigit():
            entry = found.setdefault(int(parts[1]), ("", []))
            entry[1].append((int(parts[3]), value))
    result = []
    for _, (name, values) in sorted(found.items()):
        if not name:
            raise EC2Error("InvalidParameterValue", "A filter needs a Name")
        result.append((name, [v for _, v in sorted(values)]))
    return result


def _numbered(params: Mapping[str, str], prefix: str) -> list[str]:
    """``Prefix.1``, ``Prefix.2``, ... in order."""
    entries = []
    for key, value in params.items():
        if key.startswith(prefix + "."):
            suffix = key[len(prefix) + 1 :]
            if suffix.isdigit():
                entries.append((int(suffix), value))
    return [v for _, v in sorted(entries)]


def _tag_pairs(params: Mapping[str, str], prefix: str) -> list[tuple[str, str | None]]:
    """``Prefix.N.Key``/``Prefix.N.Value`` pairs (Value None where absent), in order of N."""
    keys: dict[int, str] = {}
    values: dict[int, str] = {}
    for name, value in params.items():
        if not name.startswith(prefix + "."):
            continue
        parts = name[len(prefix) + 1 :].split(".")
        if len(parts) == 2 and parts[0].isdigit():
            if parts[1] == "Key":
                keys[int(parts[0])] = value
            elif parts[1] == "Value":
                values[int(parts[0])] = value
    return [(keys[n], values.get(n)) for n in sorted(keys)]


def _image_name(params: Mapping[str, str]) -> str:
    name = params.get("Name")
    if not name:
        raise EC2Error("MissingParameter", "The request must contain the parameter Name")
    if not _IMAGE_NAME.match(name):
        raise EC2Error(
            "InvalidAMIName.Malformed",
            "AMI names must be 3-128 characters of letters, numbers and ( ) [ ] . / - ' @ _ or space",
        )
    return name


def _tag_specifications(params: Mapping[str, str], allowed: set[str]) -> dict[str, dict[str, str]]:
    """``TagSpecification.N.ResourceType`` with its ``Tag.M.Key``/``Value``: tags per resource type."""
    specs: dict[str, dict[str, str]] = {}
    numbers = {int(part) for k in params if k.startswith("TagSpecification.") and (part := k.split(".")[1]).isdigit()}
    for n in sorted(numbers):
        prefix = f"TagSpecification.{n}"
        kind = params.get(f"{prefix}.ResourceType")
        if not kind:
            raise EC2Error("MissingParameter", f"The request must contain the parameter {prefix}.ResourceType")
        if kind not in allowed:
            raise EC2Error(
                "InvalidParameterValue", f"'{kind}' is not a valid taggable resource type for this operation."
            )
        specs.setdefault(kind, {}).update({k: v or "" for k, v in _tag_pairs(params, f"{prefix}.Tag")})
    for tags in specs.values():
        _check_tags(tags)
    return specs


def _launch_permission_changes(params: Mapping[str, str]) -> list[tuple[bool, str, str]]:
    """(add?, "userId" or "group", value) from ``LaunchPermission.Add|Remove.N.UserId|Group``, or
    from the older ``Attribute=launchPermission`` with ``OperationType`` and ``UserId.N``/``UserGroup.N``."""
    changes: list[tuple[bool, str, str]] = []
    for key in sorted(params, key=lambda k: [int(p) if p.isdigit() else 0 for p in k.split(".")]):
        match = _LAUNCH_PERMISSION.match(key)
        if match:
            changes.append((match.group(1) == "Add", "userId" if match.group(2) == "UserId" else "group", params[key]))
    if params.get("Attribute") == "launchPermission":
        operation = params.get("OperationType")
        if operation not in ("add", "remove"):
            raise EC2Error("InvalidParameterValue", f"Value ({operation}) for parameter operationType is invalid.")
        changes += [(operation == "add", "userId", u) for u in _numbered(params, "UserId")]
        changes += [(operation == "add", "group", g) for g in _numbered(params, "UserGroup")]
    for _, kind, value in changes:
        if (kind == "userId" and not _ACCOUNT.match(value)) or (kind == "group" and value != "all"):
            raise EC2Error(
                "InvalidAMIAttributeItemValue", f'Invalid attribute item value "{value}" for {kind} item type.'
            )
    return changes


def _check_tags(tags: Mapping[str, str]) -> None:
    if len(tags) > 50:
        raise EC2Error("TagLimitExceeded", "The maximum number of tags per resource is 50")
    for key, value in tags.items():
        if not key or len(key) > 128:
            raise EC2Error("InvalidParameterValue", f"Tag key must be 1-128 characters, got {len(key)}")
        if len(value) > 256:
            raise EC2Error("InvalidParameterValue", f"Tag value for key '{key}' exceeds 256 characters")
        if key.lower().startswith("aws:"):
            raise EC2Error("InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")


def _index_sets(region: Region, name: str, values: Sequence[str]) -> list[set[str]] | None:
    """The index entries that hold every instance a filter can match; None if no index serves it."""
    if _has_wildcards(values):
        return [region.by_key.get(name[4:], set())] if name.startswith("tag:") else None
    if name.startswith("tag:"):
        return [region.by_tag.get((name[4:], v), set()) for v in values]
    if name == "tag-key":
        return [region.by_key.get(v, set()) for v in values]
    if name == "instance-state-name":
        return [region.by_state.get(v, set()) for v in values]
    if name == "instance-id":
        return [{v} for v in values if v in region.instances]
    return None


Entry = tuple[int, list[str]]  # (reservation sequence, instance ids): one item of a listing
_CURSOR_TTL = 600.0
_CURSORS_KEPT = 256


@dataclass
class _Cursor:
    query: str  # region and filters, so a token cannot continue another listing
    entries: list[Entry]
    expires: float


def _encode_token(cursor_id: str, position: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([cursor_id, position]).encode()).decode()


def _decode_token(token: str) -> tuple[str, int]:
    try:
        cursor_id, position = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, binascii.Error):
        raise EC2Error("InvalidParameterValue", f"Invalid value '{token}' for NextToken") from None
    if not isinstance(cursor_id, str) or not isinstance(position, int) or position < 0:
        raise EC2Error("InvalidParameterValue", f"Invalid value '{token}' for NextToken")
    return cursor_id, position


@dataclass(frozen=True)
class _LaunchRequest:
    """A RunInstances request, checked the way EC2 checks it before launching anything."""

    image_id: str
    count: int
    instance_type: str
    zone: str
    token: str
    tags: dict[str, str]
    user_data: str | None

    @classmethod
    def parse(cls, region: Region, params: Mapping[str, str]) -> _LaunchRequest:
        image_id = params.get("ImageId")
        if not image_id:
            raise EC2Error("MissingParameter", "The request must contain the parameter ImageId")
        try:
            min_count, max_count = int(params.get("MinCount", "1")), int(params.get("MaxCount", "1"))
        except ValueError:
            raise EC2Error("InvalidParameterValue", "MinCount and MaxCount must be integers") from None
        if min_count < 1 or max_count < min_count:
            raise EC2Error("InvalidParameterValue", f"Invalid MinCount {min_count} / MaxCount {max_count}")
        instance_type = params.get("InstanceType", "m1.small")
        if not _INSTANCE_TYPE.match(instance_type):
            raise EC2Error("InvalidParameterValue", f"Invalid value '{instance_type}' for InstanceType.")
        zone = params.get("Placement.AvailabilityZone") or region.zones[0]
        if zone not in region.zones:
            raise EC2Error("InvalidParameterValue", f"Invalid availability zone: [{zone}]")
        token = params.get("ClientToken", "")
        if len(token) > 64 or not token.isascii():
            raise EC2Error("InvalidParameterValue", "ClientToken must be at most 64 ASCII characters")
        tags: dict[str, str] = {}
        for spec in sorted({k.split(".")[1] for k in params if k.startswith("TagSpecification.")}):
            prefix = f"TagSpecification.{spec}"
            if params.get(f"{prefix}.ResourceType", "instance") == "instance":
                tags.update({k: v or "" for k, v in _tag_pairs(params, f"{prefix}.Tag")})
        _check_tags(tags)
        user_data = params.get("UserData")
        if user_data is not None:
            try:
                base64.b64decode(user_data, validate=True)
            except binascii.Error:
                raise EC2Error("InvalidParameterValue", "Invalid BASE64 encoding of user data.") from None
        return cls(image_id, max_count, instance_type, zone, token, tags, user_data)


# -- the backend -----------------------------------------------------------------------------


class FastEC2Backend:
    """Every region's state behind one lock; ``handle`` answers one API request."""

    def __init__(self, settings: Settings | None = None, seed: int | None = None) -> None:
        self._initial = dataclasses.replace(settings or Settings())
        self.settings = dataclasses.replace(self._initial)
        self._lock = threading.Lock()
        # Not cryptographic: ids only need to be unique, and a seed makes runs repeatable.
        self._random = random.Random(seed)  # noqa: S311
        self._regions: dict[str, Region] = {}
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._ids: set[str] = set()
        self._seq = 0
        self._serial = 0
        # requests:<Action> per request; "examined": instances DescribeInstances checked against
        # its filters, which the indexes keep proportional to the answer (tests assert on it).
        self.stats: Counter[str] = Counter()
        self._actions: dict[str, Callable[[Region, Mapping[str, str]], str]] = {
            "DescribeInstances": self._describe_instances,
            "RunInstances": self._run_instances,
            "TerminateInstances": self._terminate_instances,
            "StopInstances": self._stop_instances,
            "StartInstances": self._start_instances,
            "ModifyInstanceAttribute": self._modify_instance_attribute,
            "DescribeInstanceAttribute": self._describe_instance_attribute,
            "CreateTags": self._create_tags,
            "DeleteTags": self._delete_tags,
            "DescribeAvailabilityZones": self._describe_availability_zones,
            "DescribeAddresses": self._describe_addresses,
            "DescribeImages": self._describe_images,
            "CreateImage": self._create_image,
            "CopyImage": self._copy_image,
            "DeregisterImage": self._deregister_image,
            "ModifyImageAttribute": self._modify_image_attribute,
            "DescribeImageAttribute": self._describe_image_attribute,
            "DescribeSnapshots": self._describe_snapshots,
            "CreateSnapshot": self._create_snapshot,
            "DeleteSnapshot": self._delete_snapshot,
            "CreateVolume": self._create_volume,
            "GetConsoleOutput": self._get_console_output,
        }

    # -- public ------------------------------------------------------------------------------
    def handle(self, region: str, params: Mapping[str, str]) -> tuple[int, bytes]:
        """Answer one request: (HTTP status, EC2 XML body)."""
        action = params.get("Action", "")
        try:
            if not action:
                raise EC2Error("MissingAction", "The request must contain the parameter Action")
            handler = self._actions.get(action)
            if handler is None:
                raise EC2Error("InvalidAction", f"The action {action} is not valid for this web service.")
            with self._lock:
                self.stats[f"requests:{action}"] += 1
                state = self._region(region)
                self._advance(state)
                inner = handler(state, params)
        except EC2Error as exc:
            return exc.status, _error_document(exc.code, exc.message)
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{NAMESPACE}">'
            f"<requestId>{uuid.uuid4()}</requestId>{inner}</{action}Response>"
        )
        return 200, body.encode()

    def reset(self) -> None:
        """Forget every resource and return to the settings the backend was made with."""
        with self._lock:
            self._regions.clear()
            self._ids.clear()
            self._cursors.clear()
            self.stats.clear()
            self.settings = dataclasses.replace(self._initial)

    def configure(self, **changes: Any) -> Settings:
        with self._lock:
            self.settings.update(changes)
            return dataclasses.replace(self.settings)

    def seed(
        self,
        count: int,
        tags: Mapping[str, str],
        *,
        unique_tag: str | None = None,
        image_id: str = "ami-03cf127a",
        instance_type: str = "t3.micro",
        region: str = DEFAULT_REGION,
    ) -> list[str]:
        """Launch ``count`` running instances straight into the state, one reservation each (as
        fleets look). With ``unique_tag``, each also carries that tag set to its own id."""
        _check_tags(tags)
        with self._lock:
            state = self._region(region)
            image = self._image(state, image_id)
            ids = []
            for _ in range(count):
                inst = self._launch(state, image, instance_type=instance_type, zone=state.zones[0], tags=dict(tags))[0]
                state.set_state(inst, "running")
                if unique_tag:
                    state.index_tag(inst, unique_tag, inst.id)
                ids.append(inst.id)
            return ids

    # -- time --------------------------------------------------------------------------------
    def _region(self, name: str) -> Region:
        region = self._regions.get(name)
        if region is None:
            if not _REGION.match(name):
                raise EC2Error("InvalidParameterValue", f"Invalid region: {name}")
            region = self._regions[name] = Region(name, self._random)
        return region

    def _later(self, region: Region, delay: float, resource_id: str, from_state: str) -> None:
        self._seq += 1
        heapq.heappush(region.timers, (time.monotonic() + delay, self._seq, resource_id, from_state))

    def _advance(self, region: Region) -> None:
        """Apply every transition that is due: the cost is the number of transitions."""
        now = time.monotonic()
        timers = region.timers
        while timers and timers[0][0] <= now:
            _, _, resource_id, from_state = heapq.heappop(timers)
            if resource_id.startswith("ami-"):
                image = region.images.get(resource_id)
                if image is not None and image.state == "pending":
                    image.state = "available"
                    for snapshot_id in image.snapshots:
                        if snapshot_id in region.snapshots:
                            region.snapshots[snapshot_id].state = "completed"
                continue
            inst = region.instances.get(resource_id)
            if inst is None or inst.state != from_state:
                continue  # superseded (stopped while pending, terminated while stopping...)
            self._settle(region, inst)
        purge = region.purge
        wall = time.time()
        while purge and purge[0][0] <= wall:
            _, instance_id = heapq.heappop(purge)
            inst = region.instances.get(instance_id)
            if inst is not None and inst.state == "terminated":
                region.forget(inst)

    def _settle(self, region: Region, inst: Instance) -> None:
        following = {"pending": "running", "stopping": "stopped", "shutting-down": "terminated"}[inst.state]
        region.set_state(inst, following)
        if following == "terminated":
            heapq.heappush(region.purge, (time.time() + self.settings.terminated_ttl, inst.id))

    def _transition(self, region: Region, inst: Instance, state: str, delay: float) -> None:
        """Enter a transient state that settles by itself after ``delay`` (at once if 0)."""
        region.set_state(inst, state)
        if delay > 0:
            self._later(region, delay, inst.id, state)
        else:
            self._settle(region, inst)

    # -- helpers -------------------------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        while True:
            candidate = f"{prefix}-{self._random.getrandbits(68):017x}"
            if candidate not in self._ids:
                self._ids.add(candidate)
                return candidate

    def _image(self, region: Region, image_id: str) -> Image:
        if not _IMAGE_ID.match(image_id):
            raise EC2Error("InvalidAMIID.Malformed", f'Invalid id: "{image_id}"')
        image = region.images.get(image_id) or _STOCK.get(image_id)
        if image is None:
            raise EC2Error("InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist")
        return image

    def _instances(self, region: Region, ids: Iterable[str]) -> list[Instance]:
        wanted = list(ids)
        for instance_id in wanted:
            if not _INSTANCE_ID.match(instance_id):
                raise EC2Error("InvalidInstanceID.Malformed", f'Invalid id: "{instance_id}"')
        missing = [i for i in wanted if i not in region.instances]
        if missing:
            if len(missing) == 1:
                raise EC2Error("InvalidInstanceID.NotFound", f"The instance ID '{missing[0]}' does not exist")
            raise EC2Error("InvalidInstanceID.NotFound", f"The instance IDs '{', '.join(missing)}' do not exist")
        return [region.instances[i] for i in dict.fromkeys(wanted)]

    def _launch(
        self,
        region: Region,
        image: Image,
        *,
        instance_type: str,
        zone: str,
        tags: dict[str, str],
        token: str = "",
        user_data: str | None = None,
        count: int = 1,
    ) -> list[Instance]:
        self._seq += 1
        seq = self._seq
        reservation = self._new_id("r")
        now = time.time()
        launched = []
        for index in range(count):
            self._serial += 1
            serial = self._serial + 10
            inst = Instance(
                id=self._new_id("i"),
                reservation=reservation,
                seq=seq,
                launch_index=index,
                image_id=image.id,
                instance_type=instance_type,
                zone=zone,
                state="pending",
                launched=now,
                private_ip=f"10.{(serial >> 16) & 255}.{(serial >> 8) & 255}.{serial & 255}",
                public_ip=f"54.{(serial >> 16) & 255}.{(serial >> 8) & 255}.{serial & 255}",
                tags={},
                client_token=token,
                user_data=user_data,
                architecture=image.architecture,
                platform=image.platform,
                reason="",
                volume_id=f"vol-{self._random.getrandbits(68):017x}",
            )
            region.instances[inst.id] = inst
            region.root_volumes[inst.volume_id] = inst.id
            region.by_state["pending"].add(inst.id)
            for key, value in tags.items():
                region.index_tag(inst, key, value)
            launched.append(inst)
        region.reservations[seq] = launched
        return launched

    def _state_change(self, changes: list[tuple[Instance, str, str]]) -> str:
        """(instance, previous state, current state as answered): EC2 answers the transient state
        (stopping, shutting-down, pending) even when the emulator settles it at once."""
        items = "".join(
            f"<item><instanceId>{inst.id}</instanceId>"
            f"<currentState><code>{_STATE_CODES[now]}</code><name>{now}</name></currentState>"
            f"<previousState><code>{_STATE_CODES[before]}</code><name>{before}</name></previousState></item>"
            for inst, before, now in changes
        )
        return f"<instancesSet>{items}</instancesSet>"

    # -- instances -----------------------------------------------------------------------------
    def _describe_instances(self, region: Region, params: Mapping[str, str]) -> str:
        ids = _numbered(params, "InstanceId")
        max_results = params.get("MaxResults")
        if ids and max_results is not None:
            raise EC2Error(
                "InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter maxResults"
            )
        page_size = self.settings.unpaged_page_size
        if max_results is not None:
            if not max_results.isdigit() or not _PAGE_MIN <= int(max_results) <= _PAGE_MAX:
                raise EC2Error(
                    "InvalidParameterValue",
                    f"Value ( {max_results} ) for parameter maxResults is invalid. "
                    f"Expecting a value between {_PAGE_MIN} and {_PAGE_MAX}.",
                )
            page_size = int(max_results)
        filters = _filters(params)
        predicates = [_instance_predicate(name, values) for name, values in filters]
        token = params.get("NextToken")
        if ids:
            entries = self._group(region, [inst.id for inst in self._instances(region, ids)], predicates)
            page_size, position, query = len(entries) or 1, 0, ""
        else:
            query = json.dumps([region.name, filters])
            if token:
                entries, position = self._resume(token, query)
            else:
                entries, position = self._group(region, self._candidates(region, filters), predicates), 0
        page = entries[position : position + page_size]
        parts = ["<reservationSet>"]
        for _, members in page:
            # Later pages come from the first page's answer: check again what changed since.
            found = [region.instances[i] for i in members if i in region.instances]
            if token:
                self.stats["examined"] += len(found)
                found = [inst for inst in found if all(p(inst) for p in predicates)]
            if not found:
                continue
            parts.append(f"<item>{region.reservation_head(found[0])}<instancesSet>")
            parts.extend(region.instance_xml(inst) for inst in found)
            parts.append("</instancesSet></item>")
        parts.append("</reservationSet>")
        if position + page_size < len(entries):
            parts.append(f"<nextToken>{self._cursor(token, query, entries, position + page_size)}</nextToken>")
        elif token:
            self._cursors.pop(_decode_token(token)[0], None)
        return "".join(parts)

    def _group(self, region: Region, candidates: list[str], predicates: list[Predicate]) -> list[Entry]:
        """The matching instances as (reservation, instance ids), in launch order."""
        self.stats["examined"] += len(candidates)
        by_reservation: dict[int, list[Instance]] = {}
        for inst in map(region.instances.__getitem__, candidates):
            if all(p(inst) for p in predicates):
                by_reservation.setdefault(inst.seq, []).append(inst)
        return [
            (seq, [i.id for i in sorted(by_reservation[seq], key=lambda i: i.launch_index)])
            for seq in sorted(by_reservation)
        ]

    def _cursor(self, token: str | None, query: str, entries: list[Entry], position: int) -> str:
        """A NextToken pointing into ``entries``: a listing costs its answer once, not once per page."""
        cursor_id = _decode_token(token)[0] if token else self._new_id("cursor")
        self._cursors[cursor_id] = _Cursor(query, entries, time.monotonic() + _CURSOR_TTL)
        self._cursors.move_to_end(cursor_id)
        while len(self._cursors) > _CURSORS_KEPT or next(iter(self._cursors.values())).expires < time.monotonic():
            self._cursors.popitem(last=False)
        return _encode_token(cursor_id, position)

    def _resume(self, token: str, query: str) -> tuple[list[Entry], int]:
        cursor_id, position = _decode_token(token)
        cursor = self._cursors.get(cursor_id)
        if cursor is None or cursor.query != query or cursor.expires < time.monotonic():
            raise EC2Error("InvalidParameterValue", f"Invalid value '{token}' for NextToken")
        return cursor.entries, position

    def _candidates(self, region: Region, filters: list[tuple[str, list[str]]]) -> list[str]:
        """The smallest index answer among the filters (every filter is checked again later).

        Sizes are summed before anything is built: the union of the live states is nearly the
        whole account, and building it just to discard it would cost what the index saves.
        """
        best: list[set[str]] | None = None
        for name, values in filters:
            sets = _index_sets(region, name, values)
            if sets is not None and (best is None or sum(map(len, sets)) < sum(map(len, best))):
                best = sets
        if best is None:
            return list(region.instances)
        if len(best) == 1:
            return list(best[0])
        return list(set().union(*best))

    def _run_instances(self, region: Region, params: Mapping[str, str]) -> str:
        request = _LaunchRequest.parse(region, params)
        fingerprint = ""
        if request.token and self.settings.client_token_dedup:
            canonical = sorted((k, v) for k, v in params.items() if not _VOLATILE.match(k))
            fingerprint = hashlib.sha256(json.dumps(canonical).encode()).hexdigest()
            seen = region.tokens.get(request.token)
            if seen is not None:
                if seen[0] != fingerprint:
                    raise EC2Error(
                        "IdempotentParameterMismatch",
                        "Arguments on this idempotent request are inconsistent with arguments used in previous "
                        "request(s).",
                    )
                original = region.reservations.get(seen[1])
                if original:
                    return self._reservation_xml(region, original)
        image = self._image(region, request.image_id)
        if image.state != "available":
            raise EC2Error("InvalidAMIID.Unavailable", f"The image id '[{image.id}]' is not available")
        launched = self._launch(
            region,
            image,
            instance_type=request.instance_type,
            zone=request.zone,
            tags=request.tags,
            token=request.token,
            user_data=request.user_data,
            count=request.count,
        )
        if fingerprint:
            region.tokens[request.token] = (fingerprint, launched[0].seq)
        body = self._reservation_xml(region, launched)  # the answer says pending, as EC2's does
        for inst in launched:
            self._transition(region, inst, "pending", self.settings.pending_delay)
        return body

    def _reservation_xml(self, region: Region, members: list[Instance]) -> str:
        items = "".join(region.instance_xml(inst) for inst in members)
        return f"{region.reservation_head(members[0])}<instancesSet>{items}</instancesSet>"

    def _terminate_instances(self, region: Region, params: Mapping[str, str]) -> str:
        ids = _numbered(params, "InstanceId")
        if not ids:
            raise EC2Error("MissingParameter", "The request must contain the parameter InstanceId")
        changes = []
        for inst in self._instances(region, ids):
            before = inst.state
            if before in ("shutting-down", "terminated"):
                changes.append((inst, before, before))
                continue
            inst.reason = f"User initiated ({_now_text()})"
            self._transition(region, inst, "shutting-down", self.settings.shutdown_delay)
            changes.append((inst, before, "shutting-down"))
        return self._state_change(changes)

    def _stop_instances(self, region: Region, params: Mapping[str, str]) -> str:
        changes = []
        for inst in self._instances(region, _numbered(params, "InstanceId")):
            before = inst.state
            if before in ("pending", "shutting-down", "terminated"):
                raise EC2Error(
                    "IncorrectInstanceState",
                    f"The instance '{inst.id}' is not in a state from which it can be stopped.",
                )
            if before != "running":
                changes.append((inst, before, before))
                continue
            inst.reason = f"User initiated ({_now_text()})"
            self._transition(region, inst, "stopping", self.settings.stop_delay)
            changes.append((inst, before, "stopping"))
        return self._state_change(changes)

    def _start_instances(self, region: Region, params: Mapping[str, str]) -> str:
        changes = []
        for inst in self._instances(region, _numbered(params, "InstanceId")):
            before = inst.state
            if before in ("stopping", "shutting-down", "terminated"):
                raise EC2Error(
                    "IncorrectInstanceState",
                    f"The instance '{inst.id}' is not in a state from which it can be started.",
                )
            if before != "stopped":
                changes.append((inst, before, before))
                continue
            inst.reason = ""
            self._transition(region, inst, "pending", self.settings.pending_delay)
            changes.append((inst, before, "pending"))
        return self._state_change(changes)

    def _modify_instance_attribute(self, region: Region, params: Mapping[str, str]) -> str:
        instance_id = params.get("InstanceId")
        if not instance_id:
            raise EC2Error("MissingParameter", "The request must contain the parameter InstanceId")
        inst = self._instances(region, [instance_id])[0]
        new_type = params.get("InstanceType.Value")
        if new_type is None and params.get("Attribute") == "instanceType":
            new_type = params.get("Value")
        user_data = params.get("UserData.Value")
        if new_type is None and user_data is None:
            raise EC2Error("InvalidParameterCombination", "This emulator modifies only instanceType and userData")
        if inst.state != "stopped":
            raise EC2Error("IncorrectInstanceState", f"The instance '{inst.id}' is not in the 'stopped' state.")
        if new_type is not None:
            if not _INSTANCE_TYPE.match(new_type):
                raise EC2Error(
                    "InvalidInstanceAttributeValue", f"Value ({new_type}) for parameter instanceType is invalid."
                )
            inst.instance_type = new_type
        if user_data is not None:
            inst.user_data = user_data
        inst.xml = None
        return "<return>true</return>"

    def _describe_instance_attribute(self, region: Region, params: Mapping[str, str]) -> str:
        inst = self._instances(region, [params.get("InstanceId", "")])[0]
        attribute = params.get("Attribute")
        if attribute == "userData":
            value = f"<userData><value>{inst.user_data}</value></userData>" if inst.user_data else "<userData/>"
        elif attribute == "instanceType":
            value = f"<instanceType><value>{inst.instance_type}</value></instanceType>"
        else:
            raise EC2Error("InvalidParameterValue", f"Value ({attribute}) for parameter attribute is invalid.")
        return f"<instanceId>{inst.id}</instanceId>{value}"

    # -- tags ----------------------------------------------------------------------------------
    def _tag_targets(self, region: Region, params: Mapping[str, str]) -> list[Instance | Image | Snapshot | Volume]:
        ids = _numbered(params, "ResourceId")
        if not ids:
            raise EC2Error("MissingParameter", "The request must contain the parameter ResourceId")
        targets: list[Instance | Image | Snapshot | Volume] = []
        for resource_id in ids:
            if resource_id.startswith("i-"):
                targets.extend(self._instances(region, [resource_id]))
            elif resource_id.startswith("ami-"):
                image = self._image(region, resource_id)
                if image.owner != ACCOUNT_ID:
                    raise EC2Error("UnauthorizedOperation", "You are not authorized to perform this operation.")
                targets.append(image)
            elif resource_id.startswith("snap-"):
                targets.append(self._snapshot(region, resource_id))
            elif resource_id.startswith("vol-") and resource_id in region.volumes:
                targets.append(region.volumes[resource_id])
            elif resource_id.startswith("vol-"):
                raise EC2Error("InvalidVolume.NotFound", f"The volume '{resource_id}' does not exist.")
            else:
                raise EC2Error("InvalidID", f'The ID "{resource_id}" is not valid')
        return targets

    def _create_tags(self, region: Region, params: Mapping[str, str]) -> str:
        tags = {k: v or "" for k, v in _tag_pairs(params, "Tag")}
        targets = self._tag_targets(region, params)
        for target in targets:
            _check_tags({**target.tags, **tags})
        for target in targets:
            if isinstance(target, Instance):
                for key, value in tags.items():
                    region.index_tag(target, key, value)
            else:
                target.tags.update(tags)
        return "<return>true</return>"

    def _delete_tags(self, region: Region, params: Mapping[str, str]) -> str:
        pairs = _tag_pairs(params, "Tag")
        for target in self._tag_targets(region, params):
            for key, value in pairs:
                # With a value (even ""), EC2 deletes the tag only while it still has that value.
                if key not in target.tags or (value is not None and target.tags[key] != value):
                    continue
                if isinstance(target, Instance):
                    region.unindex_tag(target, key)
                else:
                    del target.tags[key]
        return "<return>true</return>"

    # -- catalogue -----------------------------------------------------------------------------
    def _describe_availability_zones(self, region: Region, params: Mapping[str, str]) -> str:
        wanted = set(_numbered(params, "ZoneName"))
        attributes: dict[str, Callable[[str], str]] = {
            "region-name": lambda zone: region.name,
            "state": lambda zone: "available",
            "zone-state": lambda zone: "available",
            "zone-name": lambda zone: zone,
        }
        checks: list[Callable[[str], bool]] = []
        for name, values in _filters(params):
            getter = attributes.get(name)
            if getter is None:
                raise EC2Error("InvalidParameterValue", f"The filter '{name}' is invalid")
            checks.append(_compose(_matcher(values), getter))
        items = "".join(
            f"<item><zoneName>{z}</zoneName><zoneState>available</zoneState><regionName>{region.name}</regionName>"
            f"<zoneType>availability-zone</zoneType><messageSet/></item>"
            for z in region.zones
            if (not wanted or z in wanted) and all(check(z) for check in checks)
        )
        return f"<availabilityZoneInfo>{items}</availabilityZoneInfo>"

    def _describe_addresses(self, region: Region, params: Mapping[str, str]) -> str:
        return "<addressesSet/>"

    def _describe_images(self, region: Region, params: Mapping[str, str]) -> str:
        ids = _numbered(params, "ImageId")
        owners = {ACCOUNT_ID if o == "self" else o for o in _numbered(params, "Owner")}
        checks = [_image_predicate(name, values) for name, values in _filters(params)]
        if ids:
            images = [self._image(region, image_id) for image_id in ids]
        else:
            images = [*_STOCK.values(), *region.images.values()]

        def visible(image: Image) -> bool:
            if owners and not (image.owner in owners or ("amazon" in owners and image.owner in _AMAZON_OWNERS)):
                return False
            return all(check(image) for check in checks)

        return f"<imagesSet>{''.join(i.xml() for i in images if visible(i))}</imagesSet>"

    def _register(
        self,
        region: Region,
        name: str,
        source: Image,
        description: str,
        *,
        instance: Instance | None,
        tags: Mapping[str, Mapping[str, str]],
    ) -> Image:
        """A new image of this account, with its own snapshots: one of ``instance``'s root volume
        (CreateImage), or a copy of each of ``source``'s (CopyImage). Tags by resource type."""
        if name in region.image_names:
            raise EC2Error(
                "InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI {region.image_names[name]}"
            )
        image_id = self._new_id("ami")
        pending = self.settings.image_delay > 0
        now = time.time()
        if instance is not None:
            origins = [(instance.volume_id, f"Created by CreateImage({instance.id}) for {image_id}")]
        else:
            stamp = f"{int(now * 1000):,}"
            origins = [
                (
                    "vol-ffffffff",
                    f"Copied for DestinationAmi {image_id} from SourceAmi {source.id} "
                    f"for SourceSnapshot {snapshot_id}. Task created on {stamp}.",
                )
                for snapshot_id in source.snapshot_ids()
            ]
        snapshots = []
        for volume_id, text in origins:
            snapshot = Snapshot(
                id=self._new_id("snap"),
                volume_id=volume_id,
                size=8,
                description=text,
                started=_iso(now),
                state="pending" if pending else "completed",
                tags=dict(tags.get("snapshot", {})),
                image_id=image_id,
            )
            region.snapshots[snapshot.id] = snapshot
            snapshots.append(snapshot.id)
        image = region.images[image_id] = Image(
            id=image_id,
            owner=ACCOUNT_ID,
            name=name,
            platform=source.platform,
            architecture=source.architecture,
            created=_iso(now),
            public=False,
            state="pending" if pending else "available",
            description=description,
            source_instance=instance.id if instance else None,
            tags=dict(tags.get("image", {})),
            snapshots=tuple(snapshots),
        )
        region.image_names[name] = image_id
        if pending:
            self._later(region, self.settings.image_delay, image_id, "pending")
        return image

    def _create_image(self, region: Region, params: Mapping[str, str]) -> str:
        name = _image_name(params)
        inst = self._instances(region, [params.get("InstanceId", "")])[0]
        if inst.state not in ("running", "stopped", "stopping"):
            raise EC2Error("IncorrectInstanceState", f"The instance '{inst.id}' is not in a state to create an image")
        tags = _tag_specifications(params, {"image", "snapshot"})
        source = region.images.get(inst.image_id) or _STOCK.get(inst.image_id)
        base = source or Image(inst.image_id, "", "", inst.platform, inst.architecture, "", public=False)
        image = self._register(region, name, base, params.get("Description", ""), instance=inst, tags=tags)
        return f"<imageId>{image.id}</imageId>"

    def _copy_image(self, region: Region, params: Mapping[str, str]) -> str:
        name = _image_name(params)
        source_region, source_id = params.get("SourceRegion"), params.get("SourceImageId")
        if not source_region or not source_id:
            raise EC2Error("MissingParameter", "CopyImage needs Name, SourceRegion and SourceImageId")
        token = params.get("ClientToken", "")
        if len(token) > 64 or not token.isascii():
            raise EC2Error("InvalidParameterValue", "ClientToken must be at most 64 ASCII characters")
        fingerprint = ""
        if token and self.settings.client_token_dedup:
            canonical = sorted((k, v) for k, v in params.items() if not _VOLATILE.match(k))
            fingerprint = hashlib.sha256(json.dumps(canonical).encode()).hexdigest()
            seen = region.image_tokens.get(token)
            if seen is not None:
                if seen[0] != fingerprint:
                    raise EC2Error(
                        "IdempotentParameterMismatch",
                        "Arguments on this idempotent request are inconsistent with arguments used in previous "
                        "request(s).",
                    )
                return f"<imageId>{seen[1]}</imageId>"  # the copy made for this token, as on EC2
        tags = _tag_specifications(params, {"image", "snapshot"})
        source = self._image(self._region(source_region), source_id)
        if source.state != "available":
            raise EC2Error("InvalidAMIID.Unavailable", f"The image id '[{source_id}]' is not available")
        if params.get("CopyImageTags", "").lower() == "true":
            tags = {**tags, "image": {**source.tags, **tags.get("image", {})}}
            _check_tags(tags["image"])
        image = self._register(
            region, name, source, params.get("Description", source.description), instance=None, tags=tags
        )
        if fingerprint:
            region.image_tokens[token] = (fingerprint, image.id)
        return f"<imageId>{image.id}</imageId>"

    def _own_image(self, region: Region, image_id: str) -> Image:
        image = self._image(region, image_id)
        if image.owner != ACCOUNT_ID or image.id not in region.images:
            raise EC2Error("AuthFailure", f"Not authorized for image:{image.id}")
        return image

    def _deregister_image(self, region: Region, params: Mapping[str, str]) -> str:
        image = self._image(region, params.get("ImageId", ""))
        if image.owner != ACCOUNT_ID or image.id not in region.images:
            raise EC2Error("UnauthorizedOperation", "You are not authorized to perform this operation.")
        del region.images[image.id]
        region.image_names.pop(image.name, None)
        # Deregistering keeps the snapshots (EC2 bills them until DeleteSnapshot), now deletable.
        for snapshot_id in image.snapshots:
            snapshot = region.snapshots.get(snapshot_id)
            if snapshot is not None:
                snapshot.image_id = None
        return "<return>true</return>"

    def _modify_image_attribute(self, region: Region, params: Mapping[str, str]) -> str:
        image = self._own_image(region, params.get("ImageId", ""))
        changes = _launch_permission_changes(params)
        description = params.get("Description.Value")
        if description is None and params.get("Attribute") == "description":
            description = params.get("Value")
        if not changes and description is None:
            raise EC2Error("MissingParameter", "ModifyImageAttribute needs a launch permission or a description")
        for adding, kind, value in changes:
            if kind == "group":
                image.public = adding
            elif adding:
                image.launch_users.add(value)
            else:
                image.launch_users.discard(value)
        if description is not None:
            image.description = description
        return "<return>true</return>"

    def _describe_image_attribute(self, region: Region, params: Mapping[str, str]) -> str:
        attribute = params.get("Attribute")
        if not attribute:
            raise EC2Error("MissingParameter", "The request must contain the parameter Attribute")
        image = self._own_image(region, params.get("ImageId", ""))
        if attribute == "launchPermission":
            items = "<item><group>all</group></item>" if image.public else ""
            items += "".join(f"<item><userId>{user}</userId></item>" for user in sorted(image.launch_users))
            value = f"<launchPermission>{items}</launchPermission>"
        elif attribute == "description":
            text = f"<value>{escape(image.description)}</value>" if image.description else ""
            value = f"<description>{text}</description>"
        elif attribute == "productCodes":
            value = "<productCodes/>"
        elif attribute == "blockDeviceMapping":
            mappings = re.search(r"<blockDeviceMapping>.*</blockDeviceMapping>", image.xml())
            value = mappings.group(0) if mappings else "<blockDeviceMapping/>"
        else:
            raise EC2Error("InvalidParameterValue", f"Value ({attribute}) for parameter attribute is invalid.")
        return f"<imageId>{image.id}</imageId>{value}"

    # -- snapshots and volumes -------------------------------------------------------------
    def _snapshot(self, region: Region, snapshot_id: str) -> Snapshot:
        if not _SNAPSHOT_ID.match(snapshot_id):
            raise EC2Error("InvalidSnapshotID.Malformed", f'Invalid id: "{snapshot_id}" (expecting "snap-...")')
        snapshot = region.snapshots.get(snapshot_id)
        if snapshot is None:
            raise EC2Error("InvalidSnapshot.NotFound", f"The snapshot '{snapshot_id}' does not exist.")
        return snapshot

    def _describe_snapshots(self, region: Region, params: Mapping[str, str]) -> str:
        ids = _numbered(params, "SnapshotId")
        owners = {ACCOUNT_ID if o == "self" else o for o in _numbered(params, "Owner")}
        checks = [_snapshot_predicate(name, values) for name, values in _filters(params)]
        snapshots = [self._snapshot(region, i) for i in ids] if ids else list(region.snapshots.values())
        # Every snapshot here is the account's own: an owner list without it (amazon, another
        # account) sees none of them, and no publisher's public snapshots are emulated.
        if owners and ACCOUNT_ID not in owners:
            snapshots = []
        items = "".join(s.xml() for s in snapshots if all(check(s) for check in checks))
        return f"<snapshotSet>{items}</snapshotSet>"

    def _create_snapshot(self, region: Region, params: Mapping[str, str]) -> str:
        volume_id = params.get("VolumeId")
        if not volume_id:
            raise EC2Error("MissingParameter", "The request must contain the parameter VolumeId")
        if not _VOLUME_ID.match(volume_id):
            raise EC2Error("InvalidVolumeID.Malformed", f'Invalid id: "{volume_id}" (expecting "vol-...")')
        volume = region.volumes.get(volume_id)
        if volume is None and volume_id not in region.root_volumes:
            raise EC2Error("InvalidVolume.NotFound", f"The volume '{volume_id}' does not exist.")
        tags = _tag_specifications(params, {"snapshot"})
        snapshot = Snapshot(
            id=self._new_id("snap"),
            volume_id=volume_id,
            size=volume.size if volume is not None else 8,
            description=params.get("Description", ""),
            started=_iso(time.time()),
            tags=dict(tags.get("snapshot", {})),
        )
        region.snapshots[snapshot.id] = snapshot
        # EC2 answers "pending"; the emulator completes it at once (as instances settle at once).
        return snapshot.fields(state="pending")

    def _delete_snapshot(self, region: Region, params: Mapping[str, str]) -> str:
        snapshot_id = params.get("SnapshotId")
        if not snapshot_id:
            raise EC2Error("MissingParameter", "The request must contain the parameter SnapshotId")
        snapshot = self._snapshot(region, snapshot_id)
        if snapshot.image_id is not None:
            raise EC2Error(
                "InvalidSnapshot.InUse", f"The snapshot {snapshot.id} is currently in use by {snapshot.image_id}"
            )
        del region.snapshots[snapshot.id]
        return "<return>true</return>"

    def _create_volume(self, region: Region, params: Mapping[str, str]) -> str:
        zone = params.get("AvailabilityZone")
        if not zone:
            raise EC2Error("MissingParameter", "The request must contain the parameter AvailabilityZone")
        if zone not in region.zones:
            raise EC2Error("InvalidParameterValue", f"Invalid availability zone: [{zone}]")
        snapshot_id = params.get("SnapshotId", "")
        size_text = params.get("Size")
        if size_text is None and not snapshot_id:
            raise EC2Error("MissingParameter", "The request must contain the parameter size or snapshotId")
        snapshot_size = self._snapshot(region, snapshot_id).size if snapshot_id else 0
        if size_text is not None and (not size_text.isdigit() or not 1 <= int(size_text) <= 16384):
            raise EC2Error("InvalidParameterValue", f"Volume of size {size_text} is not valid; 1-16384 GiB.")
        size = int(size_text) if size_text is not None else snapshot_size
        if size < snapshot_size:
            raise EC2Error("InvalidParameterValue", f"Volume of {size}GiB is smaller than snapshot {snapshot_id}")
        tags = _tag_specifications(params, {"volume"})
        volume = Volume(
            id=self._new_id("vol"),
            size=size,
            zone=zone,
            snapshot_id=snapshot_id,
            volume_type=params.get("VolumeType", "gp2"),
            created=_iso(time.time()),
            tags=dict(tags.get("volume", {})),
        )
        region.volumes[volume.id] = volume
        return (
            f"<volumeId>{volume.id}</volumeId><size>{volume.size}</size><snapshotId>{volume.snapshot_id}</snapshotId>"
            f"<availabilityZone>{volume.zone}</availabilityZone><status>creating</status>"
            f"<createTime>{volume.created}</createTime><volumeType>{escape(volume.volume_type)}</volumeType>"
            f"<encrypted>false</encrypted><multiAttachEnabled>false</multiAttachEnabled>{_tag_set(volume.tags)}"
        )

    # -- console ---------------------------------------------------------------------------
    def _get_console_output(self, region: Region, params: Mapping[str, str]) -> str:
        instance_id = params.get("InstanceId")
        if not instance_id:
            raise EC2Error("MissingParameter", "The request must contain the parameter InstanceId")
        inst = self._instances(region, [instance_id])[0]
        head = f"<instanceId>{inst.id}</instanceId><timestamp>{_iso(time.time())}</timestamp>"
        if inst.state == "pending":
            return head  # nothing booted yet: EC2 answers without output
        return head + f"<output>{base64.b64encode(_boot_log(inst).encode()).decode()}</output>"


def _boot_log(inst: Instance) -> str:
    """A short boot log as a Linux guest writes it to the serial console."""
    return (
        "[    0.000000] Linux version 6.1.0-fastec2 (builder@fastec2) (gcc 12.2.0) #1 SMP\n"
        f"[    0.000000] Command line: BOOT_IMAGE=/boot/vmlinuz root=LABEL=/ console=ttyS0 ({inst.image_id})\n"
        f"[    2.104000] cloud-init[512]: Cloud-init v. 23.1 running 'init' for {inst.id}\n"
        f"[    9.871000] cloud-init[901]: Cloud-init v. 23.1 finished. Datasource DataSourceEc2Local.\n"
    )


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S GMT")


def _error_document(code: str, message: str) -> bytes:
    # No namespace, as on EC2: libcloud looks up "Errors/Error" and reads Code then Message.
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()


def region_of(headers: Mapping[str, str], params: Mapping[str, str]) -> str:
    """The region a request addresses: SigV4 scope (header or query), then Host, then us-east-1."""
    for source in (headers.get("Authorization", ""), "Credential=" + params.get("X-Amz-Credential", "")):
        match = _SIGV4_SCOPE.search(source)
        if match:
            return match.group(1)
    match = _HOST_REGION.match(headers.get("Host", ""))
    return match.group(1) if match else DEFAULT_REGION


# -- HTTP ----------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    backend: FastEC2Backend
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this Nagle holds the second for an ACK.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        # Request lines carry query-auth parameters (access key ids); keep them out of logs.
        return

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _reply(self, status: int, body: bytes, content_type: str = "text/xml;charset=UTF-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = urlsplit(self.path)
        if parts.path.startswith(("/moto-api/", "/skyfleet-emulator/")):
            self._control(parts.path, body)
            return
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        if body and "x-www-form-urlencoded" in self.headers.get("Content-Type", ""):
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
        try:
            status, answer = self.backend.handle(region_of(dict(self.headers.items()), params), params)
        except Exception:
            # A defect of the emulator: say so on stderr, and answer the way EC2 answers its own.
            traceback.print_exc()
            status, answer = 500, _error_document("InternalError", "The emulator failed; see its stderr.")
        self._reply(status, answer)

    def _control(self, path: str, body: bytes) -> None:
        backend = self.backend
        try:
            request = json.loads(body or b"{}")
            if path == RESET_PATH:
                backend.reset()
                answer: Any = {}
            elif path == SEED_PATH:
                answer = {"ids": backend.seed(**request)}
            elif path == SETTINGS_PATH:
                answer = dataclasses.asdict(backend.configure(**request))
            else:
                self._reply(404, b'{"error": "no such control endpoint"}', "application/json")
                return
        except (TypeError, ValueError, EC2Error) as exc:
            self._reply(400, json.dumps({"error": str(exc)}).encode(), "application/json")
            return
        self._reply(200, json.dumps(answer).encode(), "application/json")


class FastEC2:
    """The emulator in a background thread of this process, on 127.0.0.1 (like ``EC2Emulator``).

    State lives in ``backend`` and survives ``stop``/``start``, as moto's does in-process.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, settings: Settings | None = None) -> None:
        self.host = host
        self.port = port
        self.backend = FastEC2Backend(settings)
        self._server: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("emulator is not running")
        return f"http://{self.host}:{self._server.server_port}/"

    def start(self) -> str:
        if self._server is not None:
            return self.endpoint
        backend = self.backend

        class Handler(_Handler):
            pass

        Handler.backend = backend
        server = LoopbackHTTPServer((self.host, self.port), Handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fastec2", daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def reset(self) -> None:
        self.backend.reset()

    def configure(self, **changes: Any) -> Settings:
        return self.backend.configure(**changes)

    def seed(
        self,
        count: int,
        tags: dict[str, str],
        *,
        unique_tag: str | None = None,
        image_id: str = "ami-03cf127a",
        instance_type: str = "t3.micro",
        region: str = DEFAULT_REGION,
    ) -> list[str]:
        return self.backend.seed(
            count, tags, unique_tag=unique_tag, image_id=image_id, instance_type=instance_type, region=region
        )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class FastEC2Process(EmulatorProcess):
    """The emulator in a child process of its own (like ``EmulatorProcess`` for moto), so a
    benchmark does not share its GIL; it dies with its parent."""

    module = "skyfleet.testing.fastec2"

    def __init__(self, timeout: float = 60.0, **settings: Any) -> None:
        args: list[str] = []
        for name, value in settings.items():
            if name not in {f.name for f in dataclasses.fields(Settings)}:
                raise ValueError(f"unknown setting {name!r}")
            args += ["--set", f"{name}={json.dumps(value)}"]
        super().__init__(timeout, args=args)

    def configure(self, **changes: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self._post(SETTINGS_PATH, changes)
        return answer


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an indexed EC2 API emulator on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--pending-delay", type=float, default=0.0, help="seconds an instance stays pending")
    parser.add_argument("--no-client-token-dedup", action="store_true", help="emulate a cloud without ClientToken")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=JSON", help="any Settings field")
    args = parser.parse_args(argv)
    settings = Settings(pending_delay=args.pending_delay, client_token_dedup=not args.no_client_token_dedup)
    settings.update({k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)})
    emulator = FastEC2(args.host, args.port, settings)
    print(emulator.start(), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        emulator.stop()


if __name__ == "__main__":
    main()
