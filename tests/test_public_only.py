"""A strict fetch policy connects to the address it checked: DNS rebinding against real loopback servers.

A fake resolver answers test names (one answer per lookup, the last one repeating) and a fake route delivers
connections to "public" addresses to a loopback server standing in for the public host; `Inside` is the service on
this machine that a rebinding attack wants to reach.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from media import write_image
from servers import Routes, serve, tls_context

from ltx2cli.storage.fetch import FetchPolicy, InputCache, StorageError

PUBLIC, PUBLIC_2 = "93.184.215.14", "151.101.1.69"  # global addresses; the fake route keeps them on this machine


class Inside(Routes):
    routes: dict = {}
    hits: dict = {}


class Outside(Routes):
    routes: dict = {}
    hits: dict = {}
    hosts: list = []  # each request's Host header

    def do_GET(self):
        self.hosts.append(self.headers["Host"])
        super().do_GET()


@dataclass
class Net:
    answers: dict[str, list[str]] = field(default_factory=dict)  # name -> one answer per lookup, the last repeats
    routes: dict[str, int] = field(default_factory=dict)  # public address -> the loopback port that plays it
    lookups: list[str] = field(default_factory=list)  # test names looked up, in order
    connects: list[str] = field(default_factory=list)  # every address a socket connected to


@pytest.fixture
def net(monkeypatch) -> Net:
    fake = Net()
    real_lookup, real_connect = socket.getaddrinfo, socket.socket.connect

    def lookup(host, port, *args, **kwargs):
        if host not in fake.answers:
            return real_lookup(host, port, *args, **kwargs)
        fake.lookups.append(host)
        queue = fake.answers[host]
        return real_lookup(queue.pop(0) if len(queue) > 1 else queue[0], port, *args, **kwargs)

    def connect(sock, address):
        fake.connects.append(address[0])
        if address[0] in fake.routes:
            address = ("127.0.0.1", fake.routes[address[0]])
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return fake


@pytest.fixture
def png(tmp_path) -> bytes:
    return write_image(tmp_path / "face.png", (64, 48)).read_bytes()


@pytest.fixture
def servers(png):
    """(inside port, outside port): both serve /face.png; the outside one also redirects /hop.png."""
    Inside.routes = {"/face.png": lambda h: h.send_body(png, "image/png")}
    Outside.routes = {"/face.png": lambda h: h.send_body(png, "image/png"), "/hop.png": _redirect_to_second}
    Inside.hits, Outside.hits, Outside.hosts = {}, {}, []
    with serve(Inside) as inside, serve(Outside) as outside:
        yield urlsplit(inside).port, urlsplit(outside).port


def _redirect_to_second(h):
    port = urlsplit(f"http://{h.headers['Host']}").port  # the same port, on another name
    h.send_response(302)
    h.send_header("Location", f"http://second.test:{port}/face.png")
    h.send_header("Content-Length", "0")
    h.end_headers()


def strict(tmp_path, **policy) -> InputCache:
    return InputCache(tmp_path / "cache", FetchPolicy(allow_private=False, retries=0, **policy))


def test_a_name_rebound_to_loopback_is_fetched_from_the_checked_address(net, servers, tmp_path, png):
    inside, outside = servers
    net.answers["rebind.test"] = [PUBLIC, "127.0.0.1"]
    net.routes[PUBLIC] = outside
    got = strict(tmp_path).get(f"http://rebind.test:{inside}/face.png", "image")
    assert got.read_bytes() == png
    assert Inside.hits == {} and Outside.hits == {"/face.png": 1}
    assert net.lookups == ["rebind.test"] and net.connects == [PUBLIC]  # resolved once, connected to that
    assert Outside.hosts == [f"rebind.test:{inside}"]  # the request still names the host


def test_each_redirect_hop_is_pinned_to_its_own_checked_address(net, servers, tmp_path, png):
    inside, outside = servers
    net.answers |= {"rebind.test": [PUBLIC, "127.0.0.1"], "second.test": [PUBLIC_2, "127.0.0.1"]}
    net.routes |= {PUBLIC: outside, PUBLIC_2: outside}
    got = strict(tmp_path).get(f"http://rebind.test:{inside}/hop.png", "image")
    assert got.read_bytes() == png
    assert Inside.hits == {} and Outside.hits == {"/hop.png": 1, "/face.png": 1}
    assert net.lookups == ["rebind.test", "second.test"] and net.connects == [PUBLIC, PUBLIC_2]
    assert Outside.hosts == [f"rebind.test:{inside}", f"second.test:{inside}"]


@pytest.mark.parametrize("path", ["/face.png", "/hop.png"])
def test_a_hop_whose_first_answer_is_private_is_refused_unconnected(net, servers, tmp_path, path):
    inside, outside = servers
    first = "second.test" if path == "/hop.png" else "rebind.test"
    net.answers |= {"rebind.test": [PUBLIC], first: ["127.0.0.1", PUBLIC_2]}
    net.routes |= {PUBLIC: outside, PUBLIC_2: outside}
    with pytest.raises(StorageError, match=f"refused: {first} is a private address \\(127.0.0.1\\)"):
        strict(tmp_path).get(f"http://rebind.test:{inside}{path}", "image")
    assert Inside.hits == {} and net.connects == ([PUBLIC] if path == "/hop.png" else [])
    assert net.lookups.count(first) == 1


def test_an_allowed_host_is_exempt_and_the_lenient_policy_unchanged(net, servers, tmp_path, png):
    inside, _ = servers
    net.answers["media.internal"] = ["127.0.0.1"]
    url = f"http://media.internal:{inside}/face.png"
    assert strict(tmp_path, allowed_hosts=frozenset({"media.internal"})).get(url, "image").read_bytes() == png
    lenient = InputCache(tmp_path / "lenient", FetchPolicy(retries=0))  # the CLI's: private hosts are fine
    assert lenient.get(url, "image").read_bytes() == png
    assert Inside.hits == {"/face.png": 2}


@pytest.mark.parametrize(("certified", "ok"), [("rebind.test", True), ("other.test", False)])
def test_tls_to_a_pinned_address_still_checks_the_host_name(net, tmp_path, png, certified, ok):
    """SNI and the certificate check use the name, not the address connected to (which no certificate names)."""
    context, ca_file, sni = tls_context(certified, tmp_path)
    Outside.routes, Outside.hits, Outside.hosts = {"/face.png": lambda h: h.send_body(png, "image/png")}, {}, []
    with serve(Outside, tls=context) as outside:
        net.answers["rebind.test"] = [PUBLIC, "127.0.0.1"]
        net.routes[PUBLIC] = urlsplit(outside).port
        cache = strict(tmp_path)
        cache.session().verify = str(ca_file)
        url = f"https://rebind.test:{urlsplit(outside).port}/face.png"
        if ok:
            assert cache.get(url, "image").read_bytes() == png
        else:
            with pytest.raises(StorageError, match="cannot connect"):
                cache.get(url, "image")
    assert sni == ["rebind.test"] and net.connects == [PUBLIC]
    assert Outside.hits == ({"/face.png": 1} if ok else {})
