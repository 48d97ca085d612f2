"""``POST /v1/images/generations`` on a served tiny diffusion ecosystem (a real ``bentoml serve``)."""

import base64
import io
from collections.abc import Iterator

import httpx
import openai
import pytest
from diffusion_models import diffusion_data_dir
from PIL import Image

from service.process import Server, serve

ROUTE = "/v1/images/generations"


@pytest.fixture(scope="module")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("images")
    diffusion_data_dir(root)
    server = serve(
        root,
        M2N2_ADMIN_TOKEN="test-admin-token",
        M2N2_SERVICE__INIT_DEMO="false",
        M2N2_SERVICE__WORKERS="1",
        M2N2_EVOLUTION__STEPS_PER_TICK="2",
    )
    yield server
    server.stop()


@pytest.fixture
def client(image_server: Server) -> Iterator[httpx.Client]:
    with image_server.client() as c:
        yield c


def pngs(answer: httpx.Response) -> list[Image.Image]:
    assert answer.status_code == 200, answer.text
    return [Image.open(io.BytesIO(base64.b64decode(d["b64_json"]))) for d in answer.json()["data"]]


def test_draws_pngs_of_the_asked_size_reproducibly(client: httpx.Client, image_server: Server) -> None:
    body = {"prompt": "a handwritten seven", "n": 2, "size": "24x16", "seed": 5, "steps": 3, "guidance": 3.0}
    first = client.post(ROUTE, json=body)
    images = pngs(first)
    assert [(im.format, im.size) for im in images] == [("PNG", (24, 16))] * 2
    assert [d["seed"] for d in first.json()["data"]] == [5, 6]
    version = client.post("/status").json()["champion"]["version"]
    assert first.headers["X-Model-Version"] == str(version)
    again = client.post(ROUTE, json=body).json()["data"]
    assert [d["b64_json"] for d in again] == [d["b64_json"] for d in first.json()["data"]], "same seed, same image"
    single = client.post(ROUTE, json={**body, "n": 1, "seed": 6}).json()["data"][0]
    assert single["b64_json"] == first.json()["data"][1]["b64_json"], "image i is seeded seed + i"
    other = client.post(ROUTE, json={**body, "seed": 99}).json()["data"]
    assert other[0]["b64_json"] != first.json()["data"][0]["b64_json"]
    negative = client.post(ROUTE, json={**body, "negative_prompt": "the digit one"})
    assert len(pngs(negative)) == 2


def test_default_size_and_the_openai_client(image_server: Server) -> None:
    client = openai.OpenAI(base_url=f"{image_server.url}/v1", api_key="unused", max_retries=0)
    answer = client.images.generate(model="any", prompt="手書き の 七", n=1, response_format="b64_json")
    image = Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json)))
    assert image.size == (16, 16) and image.mode == "L"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"size": "40x40"}, "size"),  # over max_size 32
        ({"size": "18x16"}, "size"),  # not a multiple of the latent grid
        ({"size": "big"}, "size"),
        ({"steps": 9}, "steps"),  # over max_steps 8
        ({"steps": 0}, "steps"),
        ({"n": 4}, "n"),  # over max_images 3
        ({"response_format": "url"}, "response_format"),
        ({"style": "vivid"}, "style"),
        ({"prompt": ""}, "prompt"),
    ],
)
def test_out_of_limits_is_422_naming_the_parameter(client: httpx.Client, change: dict, param: str) -> None:
    answer = client.post(ROUTE, json={"prompt": "a seven", **change})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["param"] == param


def test_predict_answers_pngs_too(client: httpx.Client) -> None:
    answer = client.post("/predict", json={"inputs": ["a handwritten seven"]})
    assert answer.status_code == 200, answer.text
    (result,) = answer.json()
    assert Image.open(io.BytesIO(base64.b64decode(result["b64_json"]))).size == (16, 16)
