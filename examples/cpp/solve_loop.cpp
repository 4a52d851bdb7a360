// solve_loop: a small "simulation loop" that asks pdeserve for the Darcy pressure field once per step.
//
// Each step builds a two-valued coefficient field a (12 and 3, as in the FNO benchmark), sends it to
// pdeserve.v1.Solver/Solve as raw little-endian float32 bytes with its shape and dtype, waits at most
// --deadline-ms for the answer, and prints statistics of the returned field u and the latency seen by
// the client. Any failed call prints its status code and message and ends the program with exit code 1.
//
//   solve_loop --target 127.0.0.1:9000 --model darcy-fno --steps 5 --resolution 64 [--bad-request]

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "pdeserve/v1/solver.grpc.pb.h"

namespace pb = pdeserve::v1;

namespace {

constexpr char kInputField[] = "a";   // Darcy diffusion coefficient
constexpr char kOutputField[] = "u";  // Darcy solution (pressure)

const char kUsage[] = R"(usage: solve_loop [options]

Calls pdeserve.v1.Solver/Solve once per step with a Darcy coefficient field and prints u's statistics.

  --target HOST:PORT   gRPC address of the pdeserve server (default 127.0.0.1:9000)
  --model NAME         published model (default darcy-fno)
  --version V          model version (default: the newest)
  --steps N            number of steps (default 5)
  --resolution N       grid side: the field is N x N (default 64)
  --deadline-ms MS     deadline of every call in milliseconds (default 10000)
  --max-error E        the relative L2 error each answer may have: the server answers by the cheapest path
                       predicted to meet it (surrogate, a classical rung, the reference) and prints which
  --method M           with --max-error: auto (default), surrogate or classical
  --token TOKEN        sent as "authorization: Bearer TOKEN" (servers started with a token need it)
  --bad-request        first send a wrong-shaped tensor and show the INVALID_ARGUMENT status
  --dump-dir DIR       write each step's u to DIR/u_step<k>.f32 (raw little-endian float32, N x N)
  --help               this text

Exit codes: 0 success, 1 a call failed (status printed), 2 bad command line or unexpected response.
)";

struct Options {
  std::string target = "127.0.0.1:9000";
  std::string model = "darcy-fno";
  std::string version;  // empty: the newest published version
  std::string token;
  std::string dump_dir;
  int steps = 5;
  int resolution = 64;
  int deadline_ms = 10000;
  double max_error = 0.0;  // 0: no routing, the surrogate answers as without it
  pb::SolveMethod method = pb::SOLVE_METHOD_AUTO;
  bool bad_request = false;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "solve_loop: %s\n(see solve_loop --help)\n", message.c_str());
  std::exit(2);
}

int parse_int(const std::string& flag, const std::string& text, int lowest) {
  char* end = nullptr;
  const long value = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || value < lowest || value > 1000000) {
    usage_error(flag + " needs an integer >= " + std::to_string(lowest) + ", got '" + text + "'");
  }
  return static_cast<int>(value);
}

double parse_positive(const std::string& flag, const std::string& text) {
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !(value > 0.0) || !std::isfinite(value)) {
    usage_error(flag + " needs a positive number, got '" + text + "'");
  }
  return value;
}

pb::SolveMethod parse_method(const std::string& text) {
  pb::SolveMethod method;
  std::string name = "SOLVE_METHOD_" + text;
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::toupper(c); });
  if (!pb::SolveMethod_Parse(name, &method)) {
    usage_error("--method needs auto, surrogate or classical, got '" + text + "'");
  }
  return method;
}

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    std::string value;
    bool has_value = false;
    if (const auto eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);  // --flag=value
      flag = flag.substr(0, eq);
      has_value = true;
    }
    if (flag == "--help" || flag == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (flag == "--bad-request") {
      options.bad_request = true;
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) usage_error(flag + " needs a value");
      value = argv[++i];
    }
    if (flag == "--target") {
      options.target = value;
    } else if (flag == "--model") {
      options.model = value;
    } else if (flag == "--version") {
      options.version = value;
    } else if (flag == "--token") {
      options.token = value;
    } else if (flag == "--dump-dir") {
      options.dump_dir = value;
    } else if (flag == "--steps") {
      options.steps = parse_int(flag, value, 1);
    } else if (flag == "--resolution") {
      options.resolution = parse_int(flag, value, 1);
    } else if (flag == "--deadline-ms") {
      options.deadline_ms = parse_int(flag, value, 1);
    } else if (flag == "--max-error") {
      options.max_error = parse_positive(flag, value);
    } else if (flag == "--method") {
      options.method = parse_method(value);
    } else {
      usage_error("unknown option " + flag);
    }
  }
  if (options.method != pb::SOLVE_METHOD_AUTO && options.max_error == 0.0) {
    usage_error("--method needs --max-error");
  }
  return options;
}

// The Darcy coefficient of step `step` on an n x n grid: tilted layers of a = 12 and a = 3 that slide
// by n/16 points per step (a layered medium moving through the domain). Integer arithmetic only, so
// another language rebuilds exactly the same field: with width = n/4 and shift = n/16 (at least 1),
// a[i, j] = 12 if ((2 i + j + step shift) // width) is even else 3, row-major (i is the first axis);
// the pattern is not symmetric in i and j, so a transposed field would not go unnoticed.
std::vector<float> coefficient(int n, int step) {
  const int width = std::max(1, n / 4);
  const int shift = std::max(1, n / 16);
  std::vector<float> a(static_cast<size_t>(n) * n);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      a[static_cast<size_t>(i) * n + j] = ((2 * i + j + step * shift) / width) % 2 == 0 ? 12.0f : 3.0f;
    }
  }
  return a;
}

// float32 <-> little-endian bytes, independent of the host's byte order.
std::string to_le_bytes(const std::vector<float>& values) {
  std::string bytes(values.size() * 4, '\0');
  for (size_t k = 0; k < values.size(); ++k) {
    uint32_t bits;
    std::memcpy(&bits, &values[k], 4);
    for (int b = 0; b < 4; ++b) bytes[4 * k + b] = static_cast<char>((bits >> (8 * b)) & 0xFFu);
  }
  return bytes;
}

std::vector<float> from_le_bytes(const std::string& bytes) {
  std::vector<float> values(bytes.size() / 4);
  for (size_t k = 0; k < values.size(); ++k) {
    uint32_t bits = 0;
    for (int b = 0; b < 4; ++b) bits |= uint32_t{static_cast<unsigned char>(bytes[4 * k + b])} << (8 * b);
    std::memcpy(&values[k], &bits, 4);
  }
  return values;
}

pb::Tensor make_tensor(const std::vector<int64_t>& shape, const std::vector<float>& values) {
  pb::Tensor tensor;
  for (int64_t side : shape) tensor.add_shape(side);
  tensor.set_dtype(pb::DTYPE_FLOAT32);
  tensor.set_data(to_le_bytes(values));
  return tensor;
}

const char* code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    default: return "UNRECOGNISED";
  }
}

std::string describe(const grpc::Status& status) {
  return std::string(code_name(status.error_code())) + " (" + std::to_string(status.error_code()) +
         "): " + status.error_message();
}

// A fresh context per call (gRPC contexts are single-use) with the deadline and the credentials.
std::unique_ptr<grpc::ClientContext> new_context(const Options& options) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(options.deadline_ms));
  if (!options.token.empty()) context->AddMetadata("authorization", "Bearer " + options.token);
  return context;
}

std::shared_ptr<grpc::Channel> open_channel(const std::string& target) {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(1 << 30);  // large grids: 1024 x 1024 float32 is 4 MiB, gRPC's default cap
  arguments.SetMaxSendMessageSize(1 << 30);
  // Solve is idempotent: let the channel retry it while a replica or the proxy (re)starts.
  arguments.SetServiceConfigJSON(R"({"methodConfig": [{
      "name": [{"service": "pdeserve.v1.Solver"}],
      "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "1s",
                      "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})");
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments);
}

double percentile(std::vector<double> values, double q) {  // linear interpolation, as numpy's default
  std::sort(values.begin(), values.end());
  const double position = q * static_cast<double>(values.size() - 1);
  const size_t below = static_cast<size_t>(std::floor(position));
  const size_t above = std::min(below + 1, values.size() - 1);
  const double fraction = position - static_cast<double>(below);
  return values[below] + fraction * (values[above] - values[below]);
}

struct Stats {
  double min, max, mean, center;
};

Stats statistics(const std::vector<float>& u, int n) {
  Stats s{u[0], u[0], 0.0, u[static_cast<size_t>(n / 2) * n + n / 2]};
  double sum = 0.0;
  for (float v : u) {
    s.min = std::min<double>(s.min, v);
    s.max = std::max<double>(s.max, v);
    sum += v;
  }
  s.mean = sum / static_cast<double>(u.size());
  return s;
}

// The model must exist and take the Darcy fields; also a first call that opens the connection.
int describe_model(pb::Solver::Stub& stub, const Options& options) {
  pb::GetModelRequest request;
  request.set_name(options.model);
  request.set_version(options.version);
  pb::ModelInfo info;
  const auto started = std::chrono::steady_clock::now();
  const grpc::Status status = stub.GetModel(new_context(options).get(), request, &info);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  if (!status.ok()) {
    std::fprintf(stderr, "GetModel(%s) failed: %s\n", options.model.c_str(), describe(status).c_str());
    return 1;
  }
  const bool darcy_fields = info.inputs_size() == 1 && info.inputs(0).name() == kInputField &&
                            info.outputs_size() >= 1 && info.outputs(0).name() == kOutputField;
  std::printf("model=%s version=%s architecture=%s pde=%s sides=%lld..%lld connect_ms=%.2f\n",
              info.name().c_str(), info.version().c_str(), info.architecture().c_str(), info.pde().c_str(),
              static_cast<long long>(info.min_resolution()), static_cast<long long>(info.max_resolution()), ms);
  if (!darcy_fields) {
    std::fprintf(stderr, "model %s does not map a Darcy coefficient '%s' to '%s'\n", options.model.c_str(),
                 kInputField, kOutputField);
    return 2;
  }
  return 0;
}

// Error handling demo: a flattened field (shape [n*n] instead of [n, n]) must come back as
// INVALID_ARGUMENT with a message naming the expected shape; the server keeps serving.
int send_bad_request(pb::Solver::Stub& stub, const Options& options) {
  const int n = options.resolution;
  pb::SolveRequest request;
  request.set_model(options.model);
  request.set_version(options.version);
  (*request.mutable_inputs())[kInputField] = make_tensor({int64_t{n} * n}, coefficient(n, 0));
  pb::SolveResponse response;
  const grpc::Status status = stub.Solve(new_context(options).get(), request, &response);
  std::printf("bad_request shape=[%d] status=%s\n", n * n, describe(status).c_str());
  if (status.error_code() != grpc::StatusCode::INVALID_ARGUMENT) {
    std::fprintf(stderr, "expected INVALID_ARGUMENT for a wrong-shaped tensor, got %s\n",
                 code_name(status.error_code()));
    return 1;
  }
  return 0;
}

bool write_field(const std::string& path, const std::vector<float>& u) {
  std::ofstream out(path, std::ios::binary);
  const std::string bytes = to_le_bytes(u);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out);
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse_options(argc, argv);
  const int n = options.resolution;
  auto stub = pb::Solver::NewStub(open_channel(options.target));

  if (int rc = describe_model(*stub, options); rc != 0) return rc;
  if (options.bad_request) {
    if (int rc = send_bad_request(*stub, options); rc != 0) return rc;
  }

  std::vector<double> latencies;
  const auto loop_started = std::chrono::steady_clock::now();
  for (int step = 1; step <= options.steps; ++step) {
    // 1. the simulation's current coefficient field
    const std::vector<float> a = coefficient(n, step);

    // 2. one Solve call with a deadline
    pb::SolveRequest request;
    request.set_model(options.model);
    request.set_version(options.version);
    (*request.mutable_inputs())[kInputField] = make_tensor({n, n}, a);
    request.set_max_error(options.max_error);
    request.set_method(options.method);
    pb::SolveResponse response;
    const auto started = std::chrono::steady_clock::now();
    const grpc::Status status = stub->Solve(new_context(options).get(), request, &response);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
    if (!status.ok()) {
      std::fprintf(stderr, "step %d: Solve failed: %s\n", step, describe(status).c_str());
      return 1;
    }

    // 3. read u back: float32, shape [n, n], n*n*4 bytes
    const auto found = response.outputs().find(kOutputField);
    if (found == response.outputs().end()) {
      std::fprintf(stderr, "step %d: the response has no output '%s'\n", step, kOutputField);
      return 2;
    }
    const pb::Tensor& tensor = found->second;
    const bool layout_ok = tensor.dtype() == pb::DTYPE_FLOAT32 && tensor.shape_size() == 2 &&
                           tensor.shape(0) == n && tensor.shape(1) == n &&
                           tensor.data().size() == static_cast<size_t>(n) * n * 4;
    if (!layout_ok) {
      std::fprintf(stderr, "step %d: output '%s' is not a %dx%d float32 tensor\n", step, kOutputField, n, n);
      return 2;
    }
    const std::vector<float> u = from_le_bytes(tensor.data());
    latencies.push_back(ms);

    // 4. its check: the estimated relative L2 error (absent for an uncalibrated model) and the path
    if (response.checks_size() != 1) {
      std::fprintf(stderr, "step %d: expected one check for one sample, got %d\n", step, response.checks_size());
      return 2;
    }
    const pb::AnswerCheck& check = response.checks(0);
    char estimate[32] = "none";
    if (check.has_estimated_relative_l2()) {
      std::snprintf(estimate, sizeof estimate, "%.3e", check.estimated_relative_l2());
    }
    const std::string path = pb::AnswerPath_Name(check.path()).substr(std::strlen("ANSWER_PATH_"));
    // With --max-error: the ladder rung that answered ("" for the surrogate), with spaces as underscores
    // so that the line stays key=value.
    std::string rung = check.rung().empty() ? "-" : check.rung();
    std::replace(rung.begin(), rung.end(), ' ', '_');

    // 5. use it (here: report it)
    const Stats s = statistics(u, n);
    std::printf(
        "step=%d version=%s u_min=%.6e u_max=%.6e u_mean=%.6e u_center=%.6e latency_ms=%.2f server_ms=%.2f "
        "estimate=%s coverage=%.2f path=%s rung=%s grid_validated=%d\n",
        step, response.version().c_str(), s.min, s.max, s.mean, s.center, ms, response.inference_ms(), estimate,
        check.coverage(), path.c_str(), rung.c_str(), response.grid_validated() ? 1 : 0);
    std::fflush(stdout);
    if (!options.dump_dir.empty()) {
      const std::string path = options.dump_dir + "/u_step" + std::to_string(step) + ".f32";
      if (!write_field(path, u)) {
        std::fprintf(stderr, "step %d: cannot write %s\n", step, path.c_str());
        return 2;
      }
    }
  }
  const double total_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - loop_started).count();
  std::printf("steps=%d p50_ms=%.2f p90_ms=%.2f max_ms=%.2f total_s=%.3f\n", options.steps,
              percentile(latencies, 0.5), percentile(latencies, 0.9),
              *std::max_element(latencies.begin(), latencies.end()), total_s);
  return 0;
}
