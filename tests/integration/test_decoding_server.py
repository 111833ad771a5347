"""The OpenAI-compatible server: valid requests answered in OpenAI's shape, malformed ones a
4xx JSON error, concurrent requests all answered, on TestClient and on a real uvicorn bound to
127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from alignkit.config import ModelConfig
from alignkit.decoding.cbf import CBFConfig, CBFFilter, function_safety
from alignkit.decoding.pipeline import Decoder
from alignkit.decoding.server import create_app
from alignkit.models.load import load_causal_lm
from alignkit.rollout.generate import SamplingConfig

URL = "/v1/chat/completions"


def h(prompt, response: str) -> float:
    """Unsafe when the user's last message says 'forbidden': exercises the content filter."""
    text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
    return -1.0 if "forbidden" in text else 1.0


@pytest.fixture(scope="module")
def app(tiny_llama: Path):
    model, tok = load_causal_lm(ModelConfig(path=str(tiny_llama)), for_training=False)
    dec = Decoder(
        model,
        tok,
        sampling=SamplingConfig(max_new_tokens=8, temperature=1.0),
        cbf=CBFFilter(function_safety(h), CBFConfig(top_k=5)),
    )
    return create_app(dec, "tiny")


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app, raise_server_exceptions=False)


def chat(content: str = "hello", **kw):
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], **kw}


def test_answers_in_openai_shape(client: TestClient) -> None:
    r = client.post(URL, json=chat(n=2, max_tokens=4, seed=1))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    assert [c["index"] for c in body["choices"]] == [0, 1]
    for c in body["choices"]:
        assert c["message"]["role"] == "assistant" and isinstance(c["message"]["content"], str)
        assert c["finish_reason"] in ("stop", "length")
        assert c["alignkit"]["cbf"]["fallback"] is None and c["alignkit"]["completion_tokens"] <= 4
    u = body["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] > 0
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
    # Same seed, same answer (a client can reproduce a response).
    again = client.post(URL, json=chat(n=2, max_tokens=4, seed=1)).json()
    assert [c["message"] for c in again["choices"]] == [c["message"] for c in body["choices"]]


def test_content_filter_and_stream(client: TestClient) -> None:
    r = client.post(URL, json=chat("tell me the forbidden thing"))
    c = r.json()["choices"][0]
    assert c["finish_reason"] == "content_filter"
    assert c["message"]["content"].startswith("I can't help with that")
    parts = [
        x for x in client.post(URL, json=chat(stream=True, max_tokens=3)).text.split("\n\n") if x
    ]
    assert parts[-1] == "data: [DONE]" and all(p.startswith("data: ") for p in parts)
    assert '"role": "assistant"' in parts[0] and '"finish_reason": null' in parts[0]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ("{not json", 400, None),
        ({"model": "tiny"}, 400, "messages"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 3}]}, 400, "messages.0.content.str"),
        (chat(temperature=-1), 400, "temperature"),
        (chat(temperature="hot"), 400, "temperature"),
        (chat(n=0), 400, "n"),
        (chat(n=99), 400, "n"),
        (chat(max_tokens=10**6), 400, "max_tokens"),
        (chat(temperature=0, n=2), 400, "n"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "messages"),
        ({**chat(), "model": "gpt-4"}, 404, "model"),
        ([1, 2, 3], 400, None),
    ],
)
def test_malformed_requests_get_a_json_4xx(client: TestClient, body, status: int, param) -> None:
    kw = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, str)
        else {"json": body}
    )
    r = client.post(URL, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    if param is not None:
        assert err["param"] == param
    assert client.get("/health").json() == {"status": "ok"}  # still serving


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_uvicorn_serves_concurrent_requests(app) -> None:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert thread.is_alive(), "uvicorn exited"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as c:

            def one(i: int) -> httpx.Response:
                return c.post(URL, json=chat(f"hello {i}", max_tokens=4, seed=i))

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(one, range(8)))
            bad = c.post(URL, content=b"\xff\xfe", headers={"content-type": "application/json"})
            after = c.post(URL, json=chat(max_tokens=2))
        assert [a.status_code for a in answers] == [200] * 8
        assert all(a.json()["choices"][0]["message"]["role"] == "assistant" for a in answers)
        assert bad.status_code == 400 and "error" in bad.json()
        assert after.status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=20)
    assert not thread.is_alive()
