// qkdn-unwrap: unwraps the keys a KM answered through enc_keys_wrapped / dec_keys_wrapped (keys
// of an SAE outside every trusted node, wrapped to its certificate; draft TR.QKDN-nq 7.3,
// docs/hybrid.md) with the SAE's private key, and prints them as an ETSI GS QKD 014 key
// container {"keys":[{"key_ID":..,"key":<base64>}]}.
//
//   qkdn-unwrap --key SAE.key [--in WRAPPED.json|-] [--out KEYS.json]
//
// Exit status 0 on success, 1 when the keys do not unwrap (wrong private key, altered input; the
// reason on stderr, nothing on stdout), 2 on a usage error.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <string>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "qkdn/agent/key_wrap.hpp"
#include "qkdn/base/error.hpp"

namespace {

namespace wrap = qkdn::agent::wrap;

constexpr std::size_t kMaxInput = std::size_t{4} << 20;

void usage(std::ostream& out) {
  out << "usage: qkdn-unwrap --key SAE.key [--in WRAPPED.json|-] [--out KEYS.json]\n"
         "  Unwraps keys answered by enc_keys_wrapped / dec_keys_wrapped ("
      << wrap::kAlg
      << ")\n"
         "  with the SAE's private key (unencrypted PEM) and prints them as an ETSI 014 key\n"
         "  container {\"keys\":[{\"key_ID\":..,\"key\":<base64>}]} (to --out, mode 0600).\n";
}

/// A file's whole text (at most kMaxInput bytes); throws InvalidArgument naming the file.
std::string read_all(const std::string& path, const std::string& what) {
  std::ifstream in;
  std::istream* src = &std::cin;
  if (path != "-") {
    in.open(path, std::ios::binary);
    if (!in) throw qkdn::InvalidArgument(what + " " + path + ": " + std::strerror(errno));
    src = &in;
  }
  std::string text;
  std::array<char, 4096> buf{};
  while (*src) {
    src->read(buf.data(), buf.size());
    text.append(buf.data(), static_cast<std::size_t>(src->gcount()));
    if (text.size() > kMaxInput) {
      std::string message = what;
      message += ' ';
      message += path;
      message += ": too large";
      throw qkdn::InvalidArgument(message);
    }
  }
  OPENSSL_cleanse(buf.data(), buf.size());
  return text;
}

void write_secret(const std::string& path, const std::string& text) {
  if (path.empty()) {
    std::cout << text << std::flush;
    return;
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw qkdn::InvalidArgument("--out " + path + ": " + std::strerror(errno));
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      throw qkdn::InvalidArgument("--out " + path + ": " + std::strerror(err));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) throw qkdn::InvalidArgument("--out " + path + ": " + std::strerror(errno));
}

/// `text` as the inside of a JSON string.
std::string json_escape(const std::string& text) {
  std::string out;
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      std::array<char, 8> u{};
      std::snprintf(u.data(), u.size(), "\\u%04x", static_cast<unsigned>(c));
      out += u.data();
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string key_file;
  std::string in_file = "-";
  std::string out_file;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      usage(std::cout);
      return 0;
    }
    if ((arg == "--key" || arg == "--in" || arg == "--out") && i + 1 < argc) {
      (arg == "--key" ? key_file : arg == "--in" ? in_file : out_file) = argv[++i];
      continue;
    }
    std::cerr << "qkdn-unwrap: unknown or incomplete argument '" << arg << "'\n";
    usage(std::cerr);
    return 2;
  }
  if (key_file.empty()) {
    std::cerr << "qkdn-unwrap: --key is required\n";
    usage(std::cerr);
    return 2;
  }
  std::string pem;
  std::string out;
  int status = 0;
  try {
    pem = read_all(key_file, "--key");
    const std::string wrapped = read_all(in_file, "--in");
    const auto keys = wrap::unwrap_json(wrapped, pem);
    std::size_t total = 16;
    for (const auto& k : keys) total += 2 * k.key_id.size() + 4 * (k.bytes.size() + 2) / 3 + 32;
    out.reserve(total);  // one buffer: no reallocation leaves a copy of a key behind
    out = "{\"keys\":[";
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (i > 0) out += ',';
      std::string b64(4 * ((keys[i].bytes.size() + 2) / 3) + 1, '\0');
      const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()),
                                    keys[i].bytes.data(), static_cast<int>(keys[i].bytes.size()));
      out += "{\"key_ID\":\"" + json_escape(keys[i].key_id) + "\",\"key\":\"";
      out.append(b64.data(), static_cast<std::size_t>(n));
      out += "\"}";
      OPENSSL_cleanse(b64.data(), b64.size());
    }
    out += "]}\n";
    write_secret(out_file, out);
  } catch (const std::exception& e) {
    std::cerr << "qkdn-unwrap: " << e.what() << "\n";
    status = 1;
  }
  if (!pem.empty()) OPENSSL_cleanse(pem.data(), pem.size());
  if (!out.empty()) OPENSSL_cleanse(out.data(), out.size());
  return status;
}
