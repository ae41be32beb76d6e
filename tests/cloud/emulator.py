"""`python -m tests.cloud.emulator start ...`: gcp-storage-emulator's CLI,
with the generation headers tensorstore reads.

The emulator answers a media download without `x-goog-generation` /
`x-goog-metageneration`; tensorstore's gcs driver reads an object's
generation from them (OCDBT reads its manifest back that way) and fails
with "Malformed StorageGeneration" without them. This adds them to every
download, and lets its (one-threaded) server queue more connections than
socketserver's 5, so that tensorstore's concurrent requests wait their turn
rather than see refused connections; then runs the emulator's own `main`.
"""
import http.server
import sys

from gcp_storage_emulator.handlers import objects

_download = objects.download


def download(request, response, storage, *args, **kwargs):
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
    except Exception:  # noqa: BLE001 - the emulator's own handler answers 404
        obj = None
    if obj is not None:
        response["x-goog-generation"] = str(obj["generation"])
        response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
    return _download(request, response, storage, *args, **kwargs)


objects.download = download     # before the server module builds its route table
http.server.HTTPServer.request_queue_size = 256

if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main
    sys.exit(main(sys.argv[1:]))
