// The controller epoch without a store: a small file that only ever grows (ck-protocol.md
// clause 2). Written to a temporary file, fsynced and renamed over the old one, then the directory
// is fsynced: after a crash the file holds the old or the new epoch, never a torn one, and the new
// epoch is durable before the controller serves it.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "qkdn/controller/error.hpp"
#include "qkdn/service/controller_service.hpp"

namespace qkdn::service {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw InvalidArgument("epoch file '" + path + "': " + what);
}

void fsync_path(const std::string& path, int flags, const std::string& file) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) fail(file, "cannot open '" + path + "': " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) fail(file, "fsync of '" + path + "' failed: " + std::strerror(err));
}

}  // namespace

std::int64_t next_epoch_from_file(const std::string& path, std::int64_t floor) {
  std::int64_t last = 0;
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    std::ifstream in(path);
    if (!in) fail(path, "cannot read it");
    std::string text;
    std::getline(in, text, '\0');
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    if (text.empty() || text.size() > 19 ||
        !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      fail(path,
           "does not hold one non-negative integer (delete it only if no agent has seen "
           "this controller's epochs)");
    }
    last = std::stoll(text);
  } else if (ec) {
    fail(path, ec.message());
  }
  if (last == INT64_MAX) fail(path, "epoch exhausted");
  const std::int64_t epoch = std::max(last + 1, floor);

  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) fail(path, "cannot write '" + tmp + "'");
    out << epoch << '\n';
    out.flush();
    if (!out) fail(path, "cannot write '" + tmp + "'");
  }
  fsync_path(tmp, O_RDONLY, path);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    fail(path, std::string("cannot rename '") + tmp + "': " + std::strerror(errno));
  }
  auto dir = std::filesystem::path(path).parent_path();
  fsync_path(dir.empty() ? std::string(".") : dir.string(), O_RDONLY | O_DIRECTORY, path);
  return epoch;
}

}  // namespace qkdn::service
