"""The Python API is documented: every public module, class, method,
property and function of uringbuf, uringbuf.core, uringbuf.server and
uringbuf.asyncio has a docstring (docs/gen-python-api.py --check), and
help() renders each module with its main names."""
import importlib.util
import os
import pydoc
import unittest

import uringbuf

from ubtest import ROOT

GEN = os.path.join(ROOT, "docs", "gen-python-api.py")


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_python_api", GEN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@unittest.skipUnless(os.path.exists(GEN), "docs/gen-python-api.py not found "
                     "(tests run outside the source tree)")
class Docs(unittest.TestCase):

    def test_every_public_name_has_a_docstring(self):
        gen = load_generator()
        try:
            import uringbuf.asyncio  # noqa: F401
        except ImportError as e:
            self.fail("uringbuf.asyncio does not import: %s" % e)
        self.assertEqual(gen.undocumented(), [])

    def test_help_renders_every_module(self):
        gen = load_generator()
        expect = {
            "uringbuf": ["Loop", "Buffer", "EventLoop", "Protocol",
                         "Transport", "uringbuf.asyncio"],
            "uringbuf.core": ["ub_conn_send", "Connection", "wait("],
            "uringbuf.server": ["pause_writing", "serve_forever"],
            "uringbuf.asyncio": ["start_server", "open_connection",
                                 "AsyncioEventLoop", "eventfd"],
        }
        for name, words in expect.items():
            with self.subTest(module=name):
                text = gen.render(name)
                for w in words:
                    self.assertIn(w, text)
                self.assertNotIn(" at 0x", text)
        # help() itself works on the package (pydoc's pager aside).
        self.assertIn("uringbuf", pydoc.render_doc(uringbuf, renderer=pydoc.plaintext))


if __name__ == "__main__":
    unittest.main()
