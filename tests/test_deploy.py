"""`mlwork deploy`: the manifests validate against the published schemas (Kubernetes through kubernetes-validate's
shipped OpenAPI schemas, KServe and Knative through JSON schemas written here from their v1beta1 / v1 API references,
whose containers and volumes are core v1 objects checked with the same Kubernetes definitions), the Dockerfile parses
and keeps its promises (pinned base, numeric non-root user, health check that works, exec-form command), and bad
options are refused with the option named."""
from __future__ import annotations

import copy
import http.server
import inspect
import json
import re
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

from mlwork.core import ConflictError, InvalidParameter
from mlwork.deploy import BASE_IMAGE, GENERATED, UID, deploy_files, deploy_plan, k8s_name

BIN = Path(sys.executable).parent
K8S_VERSION = '1.31.0'  # the Kubernetes release the manifests are validated against (schemas shipped by kubernetes-validate)
CORE_FILES = ['k8s/deployment.yaml', 'k8s/service.yaml', 'k8s/hpa.yaml', 'k8s/pdb.yaml']

# ---- JSON schemas of the custom resources -----------------------------------------------------------------------
# Written from the published APIs: KServe serving.kserve.io/v1beta1 InferenceService (PredictorSpec = PodSpec inlined
# + ComponentExtensionSpec) and Knative serving.knative.dev/v1 Service (ServiceSpec = ConfigurationSpec + RouteSpec,
# RevisionSpec = the subset of PodSpec Knative admits). Core objects inside them ($ref) use Kubernetes' strict schemas.

K8S = 'https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.api.core.v1.'
STRMAP = {'type': 'object', 'additionalProperties': {'type': 'string'}}
DNS1035 = {'type': 'string', 'pattern': r'^[a-z]([-a-z0-9]*[a-z0-9])?$', 'maxLength': 63}
NUMBER_TEXT = {'type': 'string', 'pattern': r'^[0-9]+$'}


def metadata(annotations: dict[str, Any], labels: dict[str, Any]) -> dict[str, Any]:
    return {'type': 'object', 'required': ['name'], 'additionalProperties': False,
            'properties': {'name': DNS1035, 'namespace': DNS1035, 'generateName': {'type': 'string'},
                           'labels': {**STRMAP, 'properties': labels},
                           'annotations': {**STRMAP, 'properties': annotations}}}


# Knative admits a container-level security context of these fields only, no lifecycle hooks, one port named
# http1 or h2c, and probes whose port (if any) is the container's (checked by `knative_probe_ports_match`).
KNATIVE_CONTAINER = {
    'allOf': [{'$ref': K8S + 'Container'}],
    'not': {'anyOf': [{'required': ['lifecycle']}, {'required': ['startupProbe']}]},
    'properties': {
        'ports': {'type': 'array', 'maxItems': 1, 'items': {'properties': {'name': {'enum': ['http1', 'h2c']}}}},
        'securityContext': {'type': 'object', 'additionalProperties': False, 'properties': dict.fromkeys(
            ['allowPrivilegeEscalation', 'capabilities', 'readOnlyRootFilesystem', 'runAsGroup', 'runAsNonRoot', 'runAsUser',
             'seccompProfile'], {})}}}

PREDICTOR_EXTENSION = {  # ComponentExtensionSpec
    'minReplicas': {'type': 'integer', 'minimum': 0}, 'maxReplicas': {'type': 'integer', 'minimum': 0},
    'scaleTarget': {'type': 'integer', 'minimum': 1}, 'scaleMetric': {'enum': ['cpu', 'memory', 'concurrency', 'rps']},
    'containerConcurrency': {'type': 'integer', 'minimum': 0}, 'timeout': {'type': 'integer', 'minimum': 1},
    'canaryTrafficPercent': {'type': 'integer', 'minimum': 0, 'maximum': 100}, 'labels': STRMAP, 'annotations': STRMAP,
    'logger': {'type': 'object'}, 'batcher': {'type': 'object'}, 'deploymentStrategy': {'type': 'object'}}
PREDICTOR_POD = {  # PodSpec, inlined in PredictorSpec
    'containers': {'type': 'array', 'minItems': 1, 'items': {'$ref': K8S + 'Container'}},
    'volumes': {'type': 'array', 'items': {'$ref': K8S + 'Volume'}},
    'securityContext': {'$ref': K8S + 'PodSecurityContext'}, 'serviceAccountName': {'type': 'string'},
    'automountServiceAccountToken': {'type': 'boolean'}, 'enableServiceLinks': {'type': 'boolean'},
    'terminationGracePeriodSeconds': {'type': 'integer', 'minimum': 0}, 'nodeSelector': STRMAP,
    'imagePullSecrets': {'type': 'array'}, 'tolerations': {'type': 'array'}, 'affinity': {'type': 'object'},
    'topologySpreadConstraints': {'type': 'array'}}

INFERENCE_SERVICE = {
    '$schema': 'https://json-schema.org/draft/2020-12/schema', 'type': 'object',
    'required': ['apiVersion', 'kind', 'metadata', 'spec'], 'additionalProperties': False,
    'properties': {
        'apiVersion': {'const': 'serving.kserve.io/v1beta1'}, 'kind': {'const': 'InferenceService'},
        'metadata': metadata({'serving.kserve.io/deploymentMode': {'enum': ['Serverless', 'RawDeployment', 'ModelMesh']},
                              'serving.kserve.io/autoscalerClass': {'enum': ['hpa', 'external', 'none', 'keda']}},
                             {'networking.kserve.io/visibility': {'enum': ['cluster-local', 'exposed']}}),
        'spec': {'type': 'object', 'required': ['predictor'], 'additionalProperties': False,
                 'properties': {'predictor': {'type': 'object', 'required': ['containers'], 'additionalProperties': False,
                                              'properties': {**PREDICTOR_EXTENSION, **PREDICTOR_POD}},
                                'transformer': {'type': 'object'}, 'explainer': {'type': 'object'}}}},
    # Serverless mode runs the predictor on Knative: Knative's restrictions apply, and no pod security context
    'if': {'properties': {'metadata': {'properties': {'annotations': {
        'properties': {'serving.kserve.io/deploymentMode': {'const': 'Serverless'}}, 'required': ['serving.kserve.io/deploymentMode']}}}}},
    'then': {'properties': {'spec': {'properties': {'predictor': {
        'not': {'required': ['securityContext']},
        'properties': {'containers': {'items': KNATIVE_CONTAINER}}}}}}}}

KNATIVE_SERVICE = {
    '$schema': 'https://json-schema.org/draft/2020-12/schema', 'type': 'object',
    'required': ['apiVersion', 'kind', 'metadata', 'spec'], 'additionalProperties': False,
    'properties': {
        'apiVersion': {'const': 'serving.knative.dev/v1'}, 'kind': {'const': 'Service'},
        'metadata': metadata({}, {'networking.knative.dev/visibility': {'enum': ['cluster-local']}}),
        'spec': {'type': 'object', 'required': ['template'], 'additionalProperties': False, 'properties': {
            'template': {'type': 'object', 'required': ['spec'], 'additionalProperties': False, 'properties': {
                'metadata': {'type': 'object', 'additionalProperties': False, 'properties': {
                    'name': {'type': 'string'}, 'labels': STRMAP,
                    'annotations': {**STRMAP, 'properties': {
                        'autoscaling.knative.dev/min-scale': NUMBER_TEXT, 'autoscaling.knative.dev/max-scale': NUMBER_TEXT,
                        'autoscaling.knative.dev/initial-scale': NUMBER_TEXT,
                        'autoscaling.knative.dev/target': {'type': 'string', 'pattern': r'^[0-9]+(\.[0-9]+)?$'},
                        'autoscaling.knative.dev/class': {'enum': ['kpa.autoscaling.knative.dev', 'hpa.autoscaling.knative.dev']},
                        'autoscaling.knative.dev/metric': {'enum': ['concurrency', 'rps', 'cpu', 'memory']}}}}},
                'spec': {'type': 'object', 'required': ['containers'], 'additionalProperties': False, 'properties': {
                    'containers': {'type': 'array', 'minItems': 1, 'items': KNATIVE_CONTAINER},
                    'volumes': {'type': 'array', 'items': {'$ref': K8S + 'Volume'}},
                    'containerConcurrency': {'type': 'integer', 'minimum': 0, 'maximum': 1000},
                    'timeoutSeconds': {'type': 'integer', 'minimum': 0},
                    'responseStartTimeoutSeconds': {'type': 'integer', 'minimum': 0},
                    'idleTimeoutSeconds': {'type': 'integer', 'minimum': 0},
                    'serviceAccountName': {'type': 'string'}, 'imagePullSecrets': {'type': 'array'},
                    'enableServiceLinks': {'type': 'boolean'}, 'automountServiceAccountToken': {'type': 'boolean'},
                    'nodeSelector': STRMAP, 'tolerations': {'type': 'array'}, 'affinity': {'type': 'object'}}}}},
            'traffic': {'type': 'array', 'items': {'type': 'object', 'additionalProperties': False, 'properties': {
                'latestRevision': {'type': 'boolean'}, 'percent': {'type': 'integer', 'minimum': 0, 'maximum': 100},
                'revisionName': {'type': 'string'}, 'configurationName': {'type': 'string'}, 'tag': {'type': 'string'}}}}}}}}


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    "A validator whose `$ref`s into Kubernetes' definitions resolve to the pinned, strict schemas."
    defs = schema_contents(f'kubernetes-json-schema/v{K8S_VERSION}-local-strict/_definitions.json', K8S_VERSION)
    registry = Resource.from_contents(defs) @ Registry()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def knative_probe_ports_match(container: dict[str, Any]) -> bool:
    port = container['ports'][0]['containerPort']
    return all(container[p]['httpGet'].get('port', port) == port for p in ('readinessProbe', 'livenessProbe') if p in container)


def problems(schema: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(schema).iter_errors(doc)]


# ---- fixtures ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp('deploy') / 'credit'
    deploy_files('Credit_Risk', folder, image='registry.example/team/mlwork:0.1.0', namespace='ml', port=8080, workers=3,
                 replicas=2, min_replicas=2, max_replicas=8, cpu_target=65)
    return folder


def load(out: Path, rel: str) -> dict[str, Any]:
    docs = list(yaml.safe_load_all((out / rel).read_text()))
    assert len(docs) == 1, rel
    return docs[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ---- Kubernetes --------------------------------------------------------------------------------------------------

def test_every_file_is_written(out):
    assert sorted(str(p.relative_to(out)) for p in out.rglob('*') if p.is_file()) == sorted(GENERATED)


def test_core_manifests_validate_against_kubernetes(out):
    files = [str(out / f) for f in CORE_FILES]
    p = subprocess.run([str(BIN / 'kubernetes-validate'), '-k', K8S_VERSION, '--strict', *files],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count('passed') == len(CORE_FILES), p.stdout
    assert [load(out, f)['kind'] for f in CORE_FILES] == ['Deployment', 'Service', 'HorizontalPodAutoscaler', 'PodDisruptionBudget']


@pytest.mark.parametrize('breakage,expected', [
    (lambda d: d['spec']['strategy']['rollingUpdate'].update(maxUnavailabel=0), 'maxUnavailabel'),  # a typo: strict schemas refuse it
    (lambda d: d['spec'].pop('selector'), 'selector'),
    (lambda d: d['spec']['template']['spec']['containers'][0]['readinessProbe']['httpGet'].pop('port'), 'port'),
])
def test_kubernetes_validate_can_fail(out, tmp_path, breakage, expected):
    doc = load(out, 'k8s/deployment.yaml')
    breakage(doc)
    bad = tmp_path / 'bad.yaml'
    bad.write_text(yaml.safe_dump(doc))
    p = subprocess.run([str(BIN / 'kubernetes-validate'), '-k', K8S_VERSION, '--strict', str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and expected in p.stdout + p.stderr


def test_deployment_keeps_its_promises(out):
    d = load(out, 'k8s/deployment.yaml')
    assert d['metadata']['name'] == 'credit-risk' and d['metadata']['namespace'] == 'ml'
    assert d['metadata']['annotations']['mlwork.dev/model'] == 'Credit_Risk'
    assert d['spec']['strategy'] == {'type': 'RollingUpdate', 'rollingUpdate': {'maxUnavailable': 0, 'maxSurge': 1}}
    pod = d['spec']['template']['spec']
    assert pod['securityContext']['runAsNonRoot'] is True and pod['securityContext']['runAsUser'] == UID != 0
    assert pod['automountServiceAccountToken'] is False
    (c,) = pod['containers']
    assert c['command'] == ['mlwork', 'serve', 'Credit_Risk', '--host', '0.0.0.0', '--port', '8080', '--workers', '3']
    assert c['image'] == 'registry.example/team/mlwork:0.1.0'
    assert (c['readinessProbe']['httpGet']['path'], c['livenessProbe']['httpGet']['path']) == ('/ready', '/health')
    assert c['ports'] == [{'name': 'http', 'containerPort': 8080, 'protocol': 'TCP'}]
    sc = c['securityContext']
    assert (sc['runAsNonRoot'], sc['readOnlyRootFilesystem'], sc['allowPrivilegeEscalation'], sc['capabilities']) == (
        True, True, False, {'drop': ['ALL']})
    assert c['resources'] == {'requests': {'cpu': '1500m', 'memory': '1536Mi'}, 'limits': {'cpu': '3', 'memory': '3Gi'}}
    mounts = {m['mountPath']: m['name'] for m in c['volumeMounts']}
    volumes = {v['name']: v for v in pod['volumes']}
    assert volumes[mounts['/workspace']]['persistentVolumeClaim'] == {'claimName': 'mlwork-workspace'}
    assert 'emptyDir' in volumes[mounts['/tmp']]  # the root file system is read-only; /tmp is not
    assert {'name': 'MLWORK_HOME', 'value': '/workspace'} in c['env']
    service = load(out, 'k8s/service.yaml')
    assert service['spec']['selector'] == d['spec']['selector']['matchLabels'] == {
        k: v for k, v in pod.get('topologySpreadConstraints', [{}])[0]['labelSelector']['matchLabels'].items()}
    assert all(d['spec']['template']['metadata']['labels'][k] == v for k, v in service['spec']['selector'].items())
    assert service['spec']['ports'][0]['targetPort'] == 'http'


def test_hpa_scales_the_deployment_on_cpu(out):
    h = load(out, 'k8s/hpa.yaml')
    assert h['apiVersion'] == 'autoscaling/v2'
    assert h['spec']['scaleTargetRef'] == {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'name': 'credit-risk'}
    assert (h['spec']['minReplicas'], h['spec']['maxReplicas']) == (2, 8)
    assert h['spec']['metrics'] == [{'type': 'Resource', 'resource': {'name': 'cpu', 'target': {'type': 'Utilization', 'averageUtilization': 65}}}]


def test_no_secret_is_inline(out):
    """Secret-looking variables come from a Secret by reference; no manifest or Dockerfile holds a value for one."""
    secretish = re.compile(r'KEY|SECRET|TOKEN|PASSWORD', re.I)
    seen = 0
    for rel in GENERATED:
        if not rel.endswith('.yaml'):
            continue
        text = (out / rel).read_text()
        for env in re.findall(r'^\s*- name: (\S+)\n\s+(value|valueFrom):', text, re.M):
            if secretish.search(env[0]):
                seen += 1
                assert env[1] == 'valueFrom', (rel, env)
        doc = load(out, rel)
        if containers(doc):
            refs = [e['valueFrom']['secretKeyRef'] for c in containers(doc) for e in c['env'] if 'valueFrom' in e]
            assert refs == [{'name': 'credit-risk-secrets', 'key': 'data-key', 'optional': True}], rel
    assert seen == 4  # MLWORK_DATA_KEY in each pod template: Deployment, two InferenceServices, Knative Service
    dockerfile = (out / 'Dockerfile').read_text()
    assert not re.search(r'^(ENV|ARG)\s+\S*(KEY|SECRET|TOKEN|PASSWORD)', dockerfile, re.M | re.I)


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    kind = doc['kind']
    if kind == 'Deployment':
        return doc['spec']['template']['spec']['containers']
    if kind == 'InferenceService':
        return doc['spec']['predictor']['containers']
    if kind == 'Service' and doc['apiVersion'].startswith('serving.knative.dev'):
        return doc['spec']['template']['spec']['containers']
    return []


# ---- KServe and Knative ------------------------------------------------------------------------------------------

@pytest.mark.parametrize('rel', ['kserve/inferenceservice.yaml', 'kserve/inferenceservice-serverless.yaml'])
def test_inference_service_matches_the_kserve_api(out, rel):
    text = (out / rel).read_text()
    doc = load(out, rel)
    assert problems(INFERENCE_SERVICE, doc) == []
    assert yaml.safe_load(yaml.safe_dump(doc, sort_keys=False)) == doc  # round trip
    p = doc['spec']['predictor']
    assert p['containers'][0]['name'] == 'kserve-container' and p['containers'][0]['image'] == 'registry.example/team/mlwork:0.1.0'
    assert p['minReplicas'] <= p['maxReplicas'] == 8
    if 'serverless' in rel:
        assert knative_probe_ports_match(p['containers'][0])
        assert doc['metadata']['annotations']['serving.kserve.io/deploymentMode'] == 'Serverless' and p['minReplicas'] == 0
        assert 'kubernetes.podspec-persistent-volume-claim' in text
    else:
        assert doc['metadata']['annotations']['serving.kserve.io/deploymentMode'] == 'RawDeployment'
        assert (p['minReplicas'], p['scaleMetric'], p['scaleTarget']) == (2, 'cpu', 65)


def test_knative_service_scales_to_zero(out):
    doc = load(out, 'knative/service.yaml')
    assert problems(KNATIVE_SERVICE, doc) == []
    assert yaml.safe_load(yaml.safe_dump(doc, sort_keys=False)) == doc
    notes = doc['spec']['template']['metadata']['annotations']
    assert notes['autoscaling.knative.dev/min-scale'] == '0' and notes['autoscaling.knative.dev/max-scale'] == '8'
    assert "autoscaling.knative.dev/min-scale: '0'" in (out / 'knative/service.yaml').read_text()  # a string, as Knative wants
    (c,) = doc['spec']['template']['spec']['containers']
    assert knative_probe_ports_match(c) and not knative_probe_ports_match({**c, 'livenessProbe': {'httpGet': {'path': '/health', 'port': 9}}})
    assert c['ports'][0]['containerPort'] == 8080 and c['command'][:3] == ['mlwork', 'serve', 'Credit_Risk']


@pytest.mark.parametrize('schema,rel,breakage', [
    (KNATIVE_SERVICE, 'knative/service.yaml',
     lambda d: d['spec']['template']['metadata']['annotations'].update({'autoscaling.knative.dev/min-scale': 0})),
    (KNATIVE_SERVICE, 'knative/service.yaml', lambda d: d['spec']['template']['spec'].update(securityContext={'fsGroup': 1})),
    (KNATIVE_SERVICE, 'knative/service.yaml',
     lambda d: d['spec']['template']['spec']['containers'][0].update(lifecycle={'preStop': {'exec': {'command': ['sleep', '5']}}})),
    (KNATIVE_SERVICE, 'knative/service.yaml', lambda d: d['spec']['template']['spec']['containers'][0].update(imagePullPolcy='Always')),
    (INFERENCE_SERVICE, 'kserve/inferenceservice.yaml', lambda d: d['spec'].pop('predictor')),
    (INFERENCE_SERVICE, 'kserve/inferenceservice.yaml', lambda d: d['spec']['predictor'].update(minReplicas='1')),
    (INFERENCE_SERVICE, 'kserve/inferenceservice.yaml', lambda d: d['spec']['predictor'].update(scaleMetric='gpu')),
    (INFERENCE_SERVICE, 'kserve/inferenceservice-serverless.yaml', lambda d: d['spec']['predictor'].update(securityContext={'fsGroup': 1})),
    (INFERENCE_SERVICE, 'kserve/inferenceservice.yaml', lambda d: d['metadata'].update(name='Credit_Risk')),
])
def test_custom_resource_schemas_can_fail(out, schema, rel, breakage):
    doc = copy.deepcopy(load(out, rel))
    breakage(doc)
    assert problems(schema, doc)


# ---- the Dockerfile ----------------------------------------------------------------------------------------------

def parsed(folder: Path) -> DockerfileParser:
    return DockerfileParser(path=str(folder / 'Dockerfile'))


def instructions(folder: Path, name: str) -> list[str]:
    return [i['value'] for i in parsed(folder).structure if i['instruction'] == name]


def test_dockerfile_is_pinned_non_root_and_healthy(out):
    df = parsed(out)
    assert [i['instruction'] for i in df.structure].count('FROM') == 1
    image, _, tag = df.baseimage.partition(':')
    assert df.baseimage == BASE_IMAGE and image == 'python' and tag != 'latest'
    assert re.fullmatch(r'3\.11\.\d+-slim-bookworm', tag)  # an exact patch release, not a moving 3.11 tag
    (user,) = instructions(out, 'USER')
    uid, _, gid = user.partition(':')
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    assert instructions(out, 'EXPOSE') == ['8080']
    (health,) = instructions(out, 'HEALTHCHECK')
    assert '/health' in health and 'urllib.request' in health and 'curl' not in health
    (cmd,) = instructions(out, 'CMD')
    assert json.loads(cmd) == ['mlwork', 'serve', 'Credit_Risk', '--host', '0.0.0.0', '--port', '8080', '--workers', '3']  # exec form
    runs = instructions(out, 'RUN')
    assert any('pip install' in r and '"mlwork==0.1.0"' in r for r in runs)
    assert parsed(out).envs['MLWORK_HOME'] == '/workspace'
    users = [i['instruction'] for i in df.structure]
    assert users.index('USER') < users.index('CMD') and users.index('USER') > max(i for i, x in enumerate(users) if x == 'RUN')


def test_dockerfile_installs_a_given_wheel(tmp_path):
    wheel = tmp_path / 'mlwork-0.2.0-py3-none-any.whl'
    with zipfile.ZipFile(wheel, 'w') as z:
        z.writestr('mlwork/__init__.py', '')
    folder = tmp_path / 'deploy'
    paths = deploy_files('fraud', folder, wheel=wheel, base_digest='sha256:' + 'ab' * 32, kserve=False, knative=False)
    assert folder / 'dist' / wheel.name in paths and (folder / 'dist' / wheel.name).read_bytes() == wheel.read_bytes()
    assert instructions(folder, 'COPY') == [f'dist/{wheel.name} /tmp/wheels/']
    assert any(f'/tmp/wheels/{wheel.name}' in r for r in instructions(folder, 'RUN'))
    assert parsed(folder).baseimage == f'{BASE_IMAGE}@sha256:' + 'ab' * 32
    assert load(folder, 'k8s/deployment.yaml')['spec']['template']['spec']['containers'][0]['image'] == 'mlwork:0.2.0'
    ignore = (folder / '.dockerignore').read_text().split()
    assert ignore[ignore.index('*'):] == ['*', '!dist/*.whl']  # the build context is the wheel alone


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == '/health' else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "alive"}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize('status,code', [(200, 0), (503, 1), (None, 1)])
def test_healthcheck_command_runs(tmp_path, status, code):
    """The HEALTHCHECK's command, run as Docker would: 0 when /health answers 200, 1 otherwise (503, nothing listening)."""
    port = free_port()
    plan = deploy_plan('m1', tmp_path / 'x', port=port)
    (line,) = [l for l in plan.files['Dockerfile'].splitlines() if l.strip().startswith('CMD ["python"')]
    argv = json.loads(line.strip()[4:])
    server = None
    if status is not None:
        handler = type('H', (_Health,), {'status': status})
        server = http.server.ThreadingHTTPServer(('127.0.0.1', port), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        p = subprocess.run([sys.executable, *argv[1:]], capture_output=True, timeout=30)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    assert p.returncode == code, p.stderr


def test_serve_command_matches_the_cli():
    """The container's arguments are ones `mlwork serve` accepts (once the serve command is registered)."""
    p = subprocess.run([str(BIN / 'mlwork'), 'serve', '--help'], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        pytest.skip('`mlwork serve` is not registered yet')
    for option in ('--host', '--port', '--workers'):
        assert option in p.stdout


# ---- options, names, folder --------------------------------------------------------------------------------------

def test_signature_is_the_spec():
    params = inspect.signature(deploy_files).parameters
    want = {'image': None, 'port': 8080, 'workers': 2, 'replicas': 2, 'min_replicas': 1, 'max_replicas': 10, 'cpu_target': 70,
            'kserve': True, 'knative': True, 'namespace': None, 'overwrite': False}
    assert {k: params[k].default for k in want} == want
    assert all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in want)


@pytest.mark.parametrize('options,message', [
    ({'min_replicas': 5, 'max_replicas': 2, 'replicas': 5}, "'max_replicas' parameter of deploy_files must be an int >= min_replicas (5). Got 2"),
    ({'replicas': 11}, "'replicas' parameter of deploy_files must be an int in [min_replicas, max_replicas] = [1, 10]. Got 11"),
    ({'port': 80}, "'port' parameter of deploy_files must be an int in [1024, 65535]. Got 80"),
    ({'port': 70000}, "Got 70000"),
    ({'cpu_target': 0}, "'cpu_target' parameter of deploy_files must be an int in [1, 100]. Got 0"),
    ({'cpu_target': 101}, "Got 101"),
    ({'workers': 0}, "'workers' parameter"),
    ({'namespace': 'Prod_NS'}, "'namespace' parameter of deploy_files must be a Kubernetes namespace"),
    ({'pvc': 'My Claim'}, "'pvc' parameter"),
    ({'image': 'mlwork:latest'}, "'image' parameter of deploy_files must be a pinned image reference"),
    ({'image': 'mlwork'}, "Got 'mlwork' instead"),
    ({'base_image': 'python:3.11-slim'}, "'base_image' parameter of deploy_files must be an image with an exact release tag"),
    ({'base_digest': 'sha256:abc'}, "'base_digest' parameter"),
    ({'memory_request': '4Gi', 'memory_limit': '1Gi'}, "'memory_request' parameter of deploy_files must be a memory quantity > 0 and at most memory_limit (1Gi). Got '4Gi'"),
    ({'cpu_limit': 'two'}, "'cpu_limit' parameter of deploy_files must be a CPU quantity"),
    ({'name': 'Credit_Risk'}, "'name' parameter of deploy_files must be a Kubernetes resource name"),
    ({'kserve': 'yes'}, "'kserve' parameter of deploy_files must be a bool"),
    ({'secret_env': {'MLWORK_DATA_KEY': 'bad key'}}, "'secret_env' parameter"),
])
def test_bad_options_are_refused_by_name(tmp_path, options, message):
    with pytest.raises(InvalidParameter) as e:
        deploy_files('credit', tmp_path / 'x', **options)
    assert message in str(e.value)
    assert not (tmp_path / 'x').exists()  # nothing written


def test_bad_model_name_is_refused(tmp_path):
    with pytest.raises(InvalidParameter, match="'model' parameter of deploy_files must be a registered model name.*Got 'credit risk!'"):
        deploy_files('credit risk!', tmp_path / 'x')


@pytest.mark.parametrize('model', ['Credit_Risk', 'credit.risk.v2', '9lives', 'A' * 120, 'x-' * 30 + 'y'])
def test_derived_names_are_dns_labels(model):
    name = k8s_name(model)
    assert re.fullmatch(r'[a-z]([-a-z0-9]*[a-z0-9])?', name) and len(name) <= 40
    plan = deploy_plan(model, '/tmp/unused')
    assert plan.name == name
    assert (name == model) == (not any('not a valid Kubernetes resource name' in n for n in plan.notes))
    assert load_text(plan.files['knative/service.yaml'])['metadata']['name'] == name
    assert load_text(plan.files['knative/service.yaml'])['metadata']['annotations']['mlwork.dev/model'] == model


def load_text(text: str) -> dict[str, Any]:
    return yaml.safe_load(text)


def test_existing_folder_is_refused_unless_overwrite(tmp_path):
    folder = tmp_path / 'deploy'
    folder.mkdir()
    (folder / 'notes.txt').write_text('mine')
    with pytest.raises(ConflictError, match=r'already holds notes\.txt; expected a new or empty folder.*--force'):
        deploy_files('credit', folder)
    assert sorted(p.name for p in folder.iterdir()) == ['notes.txt']
    deploy_files('credit', folder, overwrite=True, port=9000)
    assert (folder / 'notes.txt').read_text() == 'mine'  # not ours: kept
    assert 'EXPOSE 9000' in (folder / 'Dockerfile').read_text()
    deploy_files('credit', folder, overwrite=True, kserve=False, knative=False)
    assert not (folder / 'kserve').exists() or not any((folder / 'kserve').iterdir())
    assert not (folder / 'knative' / 'service.yaml').exists() and (folder / 'k8s' / 'hpa.yaml').exists()
    (tmp_path / 'file').write_text('x')
    with pytest.raises(ConflictError, match='is not a folder'):
        deploy_files('credit', tmp_path / 'file', overwrite=True)


def test_readme_says_how_to_choose_and_share_storage(out):
    text = (out / 'README.md').read_text()
    for needle in ('ReadWriteMany', 'object-store URI', 'kubectl -n ml apply -f k8s/', 'scale to zero', 'kubectl -n ml create secret generic credit-risk-secrets',
                   '| KServe, serverless |', '| Knative alone |', 'kubernetes.podspec-persistent-volume-claim', 'canaryTrafficPercent'):
        assert needle in text, needle
    plan = deploy_plan('credit', '/tmp/unused', replicas=1, max_replicas=1, kserve=False, knative=False)
    assert not any('ReadWriteMany' in n for n in plan.notes) and '| Knative alone |' not in plan.files['README.md']


def test_plan_renders(out):
    plan = deploy_plan('Credit_Risk', out, namespace='ml')
    d = plan.to_dict()
    assert d['name'] == 'credit-risk' and d['files'] == list(GENERATED) and json.dumps(d)
    text = str(plan)
    assert all(f in text for f in GENERATED) and f'kubectl apply -f {out}/k8s/' in text
    assert '<table>' in plan._repr_html_() and 'Credit_Risk' in plan._repr_html_()
