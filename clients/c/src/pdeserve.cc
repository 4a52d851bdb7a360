// The C ABI of pdeserve/pdeserve.h over the gRPC C++ client. Every exported function catches every C++
// exception (guarded() below) and turns it into a status and a message: nothing escapes to C or Fortran.
#include "pdeserve/pdeserve.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "pdeserve/v1/solver.grpc.pb.h"

namespace pb = pdeserve::v1;

namespace {

constexpr bool kBigEndian =
#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    true;
#else
    false;
#endif

// A failure with its status, thrown inside the library and turned into a return value at the boundary.
struct Failure {
  int code;
  std::string message;
};

[[noreturn]] void fail(int code, std::string message) { throw Failure{code, std::move(message)}; }

int report(pdeserve_error* err, int code, const std::string& message) {
  if (err != nullptr) {
    err->code = code;
    const size_t n = std::min(message.size(), sizeof(err->message) - 1);
    std::memcpy(err->message, message.data(), n);
    err->message[n] = '\0';
  }
  return code;
}

// Runs body (which returns nothing, or throws) and reports its outcome: the one exit of every function.
template <class Body>
int guarded(pdeserve_error* err, Body&& body) noexcept {
  try {
    body();
    return report(err, PDESERVE_OK, "");
  } catch (const Failure& failure) {
    return report(err, failure.code, failure.message);
  } catch (const std::bad_alloc&) {
    return report(err, PDESERVE_CLIENT_FAILURE, "pdeserve: out of memory");
  } catch (const std::exception& e) {
    return report(err, PDESERVE_CLIENT_FAILURE, std::string("pdeserve: ") + e.what());
  } catch (...) {
    return report(err, PDESERVE_CLIENT_FAILURE, "pdeserve: unexpected failure inside the library");
  }
}

template <class T>
T* need(T* pointer, const char* what) {
  if (pointer == nullptr) fail(PDESERVE_BAD_ARGUMENT, std::string("pdeserve: ") + what + " is NULL");
  return pointer;
}

std::string text(const char* s) { return s == nullptr ? std::string() : std::string(s); }

size_t itemsize(int dtype) {
  switch (dtype) {
    case PDESERVE_FLOAT32:
      return 4;
    case PDESERVE_FLOAT64:
      return 8;
    default:
      fail(PDESERVE_BAD_ARGUMENT, "pdeserve: dtype must be PDESERVE_FLOAT32 (1) or PDESERVE_FLOAT64 (2), got " +
                                      std::to_string(dtype));
  }
}

void check_layout(int layout) {
  if (layout != PDESERVE_ROW_MAJOR && layout != PDESERVE_COLUMN_MAJOR) {
    fail(PDESERVE_BAD_ARGUMENT, "pdeserve: layout must be PDESERVE_ROW_MAJOR (0) or PDESERVE_COLUMN_MAJOR (1), got " +
                                    std::to_string(layout));
  }
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t k = 0; k < shape.size(); ++k) s += (k ? ", " : "") + std::to_string(shape[k]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

// Number of elements of `shape`, refusing negative dimensions, too many dimensions and overflow.
size_t element_count(const std::vector<int64_t>& shape, const std::string& what) {
  if (shape.size() > PDESERVE_MAX_RANK) {
    fail(PDESERVE_BAD_ARGUMENT, "pdeserve: " + what + " has " + std::to_string(shape.size()) +
                                    " dimensions; at most " + std::to_string(PDESERVE_MAX_RANK) + " are allowed");
  }
  size_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail(PDESERVE_BAD_ARGUMENT, "pdeserve: " + what + " has a negative dimension: " + shape_text(shape));
    if (d != 0 && n > (SIZE_MAX / 16) / static_cast<size_t>(d)) {
      fail(PDESERVE_BAD_ARGUMENT, "pdeserve: " + what + " is too large: " + shape_text(shape));
    }
    n *= static_cast<size_t>(d);
  }
  return n;
}

std::vector<int64_t> shape_of(int rank, const int64_t* shape, const std::string& what) {
  if (rank < 0 || rank > PDESERVE_MAX_RANK) {
    fail(PDESERVE_BAD_ARGUMENT, "pdeserve: " + what + " has rank " + std::to_string(rank) + "; 0 to " +
                                    std::to_string(PDESERVE_MAX_RANK) + " are allowed");
  }
  if (rank > 0) need(shape, "shape");
  return std::vector<int64_t>(shape, shape + rank);
}

// Element loads and stores in little-endian byte order, whatever the host's.
template <class T>
T load_le(const char* p) {
  T value;
  if constexpr (kBigEndian) {
    char b[sizeof(T)];
    for (size_t k = 0; k < sizeof(T); ++k) b[k] = p[sizeof(T) - 1 - k];
    std::memcpy(&value, b, sizeof(T));
  } else {
    std::memcpy(&value, p, sizeof(T));
  }
  return value;
}

template <class T>
void store_le(char* p, T value) {
  if constexpr (kBigEndian) {
    char b[sizeof(T)];
    std::memcpy(b, &value, sizeof(T));
    for (size_t k = 0; k < sizeof(T); ++k) p[k] = b[sizeof(T) - 1 - k];
  } else {
    std::memcpy(p, &value, sizeof(T));
  }
}

// Visits every element of an array of `shape` in row-major order, calling f(row_major_index,
// column_major_index) for each: the two places the same element (same indices) has in the two layouts.
template <class F>
void for_each_element(const std::vector<int64_t>& shape, size_t count, F&& f) {
  const size_t rank = shape.size();
  if (count == 0) return;
  if (rank <= 1) {
    for (size_t k = 0; k < count; ++k) f(k, k);
    return;
  }
  std::vector<size_t> col_stride(rank);  // column-major strides: the first index fastest
  size_t stride = 1;
  for (size_t a = 0; a < rank; ++a) {
    col_stride[a] = stride;
    stride *= static_cast<size_t>(shape[a]);
  }
  std::vector<int64_t> index(rank, 0);
  const size_t last = rank - 1;
  const size_t inner = static_cast<size_t>(shape[last]);
  const size_t inner_stride = col_stride[last];
  size_t row = 0;
  size_t col_base = 0;  // column-major offset of index with its last entry 0
  while (row < count) {
    for (size_t k = 0; k < inner; ++k) f(row + k, col_base + k * inner_stride);
    row += inner;
    for (size_t a = last; a-- > 0;) {  // odometer over the outer indices
      if (++index[a] < shape[a]) {
        col_base += col_stride[a];
        break;
      }
      col_base -= static_cast<size_t>(index[a] - 1) * col_stride[a];
      index[a] = 0;
    }
  }
}

// The caller's array as the wire's row-major little-endian bytes.
template <class T>
std::string to_wire(const T* data, const std::vector<int64_t>& shape, size_t count, int layout) {
  std::string bytes(count * sizeof(T), '\0');
  char* out = bytes.data();
  if (layout == PDESERVE_ROW_MAJOR || shape.size() <= 1) {
    if (!kBigEndian) {
      if (count) std::memcpy(out, data, count * sizeof(T));
    } else {
      for (size_t k = 0; k < count; ++k) store_le<T>(out + k * sizeof(T), data[k]);
    }
  } else {
    for_each_element(shape, count,
                     [&](size_t row, size_t col) { store_le<T>(out + row * sizeof(T), data[col]); });
  }
  return bytes;
}

// The wire's row-major little-endian elements (W) into the caller's buffer of T in `layout`.
template <class W, class T>
void from_wire(const std::string& bytes, const std::vector<int64_t>& shape, size_t count, int layout, T* out) {
  const char* in = bytes.data();
  if (layout == PDESERVE_ROW_MAJOR || shape.size() <= 1) {
    if (std::is_same<W, T>::value && !kBigEndian) {
      if (count) std::memcpy(out, in, count * sizeof(T));
    } else {
      for (size_t k = 0; k < count; ++k) out[k] = static_cast<T>(load_le<W>(in + k * sizeof(W)));
    }
  } else {
    for_each_element(shape, count, [&](size_t row, size_t col) {
      out[col] = static_cast<T>(load_le<W>(in + row * sizeof(W)));
    });
  }
}

const char* const kStatusNames[] = {"OK",
                                    "CANCELLED",
                                    "UNKNOWN",
                                    "INVALID_ARGUMENT",
                                    "DEADLINE_EXCEEDED",
                                    "NOT_FOUND",
                                    "ALREADY_EXISTS",
                                    "PERMISSION_DENIED",
                                    "RESOURCE_EXHAUSTED",
                                    "FAILED_PRECONDITION",
                                    "ABORTED",
                                    "OUT_OF_RANGE",
                                    "UNIMPLEMENTED",
                                    "INTERNAL",
                                    "UNAVAILABLE",
                                    "DATA_LOSS",
                                    "UNAUTHENTICATED"};
const char* const kLibraryStatusNames[] = {"BUFFER_TOO_SMALL", "SHAPE_MISMATCH", "BAD_ARGUMENT",
                                           "NO_SUCH_FIELD",    "NOT_SUPPORTED",  "CLIENT_FAILURE"};

[[noreturn]] void fail_rpc(const grpc::Status& status, const std::string& call) {
  const int code = static_cast<int>(status.error_code());
  fail(code, std::string(pdeserve_status_name(code)) + ": " + call + ": " + status.error_message());
}

}  // namespace

// ---- objects ------------------------------------------------------------------------------------------

struct pdeserve_options {
  std::string token;
  bool tls = false;
  std::string root_certificates;
  double deadline_s = 60.0;
  int retries = 3;
  std::string application;
};

struct Connection {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::Solver::Stub> stub;
  pdeserve_options options;

  void prepare(grpc::ClientContext& context) const {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::microseconds(static_cast<int64_t>(options.deadline_s * 1e6)));
    if (!options.token.empty()) context.AddMetadata("authorization", "Bearer " + options.token);
    if (!options.application.empty()) context.AddMetadata("application", options.application);
  }

  // A unary call, retried after UNAVAILABLE with exponential backoff from 0.1 s.
  template <class Request, class Response, class Method>
  void call(Method method, const Request& request, Response* response, const std::string& what) const {
    for (int attempt = 0;; ++attempt) {
      grpc::ClientContext context;
      prepare(context);
      const grpc::Status status = (stub.get()->*method)(&context, request, response);
      if (status.ok()) return;
      if (status.error_code() != grpc::StatusCode::UNAVAILABLE || attempt >= options.retries) {
        const std::string tries =
            attempt > 0 ? " (after " + std::to_string(attempt + 1) + " attempts)" : std::string();
        fail_rpc(status, what + tries);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(1e5 * std::pow(2.0, attempt))));
    }
  }
};

struct pdeserve_client {
  std::shared_ptr<Connection> connection;
};

struct pdeserve_request {
  pb::SolveRequest solve;
};

struct pdeserve_answer {
  pb::SolveResponse solve;
  pb::RolloutStep step;
  bool is_step = false;
  std::vector<std::string> output_names;  // sorted

  const google::protobuf::Map<std::string, pb::Tensor>& outputs() const {
    return is_step ? step.outputs() : solve.outputs();
  }
  const google::protobuf::RepeatedPtrField<pb::AnswerCheck>& checks() const {
    return is_step ? step.checks() : solve.checks();
  }
  void index() {
    for (const auto& entry : outputs()) output_names.push_back(entry.first);
    std::sort(output_names.begin(), output_names.end());
  }
};

struct pdeserve_rollout {
  std::shared_ptr<Connection> connection;
  std::unique_ptr<grpc::ClientContext> context;
  std::unique_ptr<grpc::ClientReader<pb::RolloutStep>> reader;
  bool ended = false;
  std::string what;
};

struct pdeserve_model {
  pb::ModelInfo info;
  std::vector<std::pair<std::string, double>> metrics;  // sorted by name
};

namespace {

// Copies `tensor` (the answer's field `name`) into the caller's buffer, checking its size (and, when
// `shape` is given, its shape) first.
void copy_out(const pb::Tensor& tensor, const std::string& name, int dtype, int layout, void* buffer,
              size_t capacity, const std::vector<int64_t>* caller_shape) {
  const size_t out_size = itemsize(dtype);
  check_layout(layout);
  const std::vector<int64_t> shape(tensor.shape().begin(), tensor.shape().end());
  const size_t count = element_count(shape, "output '" + name + "'");
  size_t wire_size = 0;
  if (tensor.dtype() == pb::DTYPE_FLOAT32) {
    wire_size = 4;
  } else if (tensor.dtype() == pb::DTYPE_FLOAT64) {
    wire_size = 8;
  } else {
    fail(PDESERVE_CLIENT_FAILURE, "pdeserve: output '" + name + "' came with an unknown dtype " +
                                      std::to_string(tensor.dtype()));
  }
  if (tensor.data().size() != count * wire_size) {
    fail(PDESERVE_CLIENT_FAILURE, "pdeserve: output '" + name + "' has shape " + shape_text(shape) + " but " +
                                      std::to_string(tensor.data().size()) + " bytes");
  }
  if (caller_shape != nullptr) capacity = element_count(*caller_shape, "the buffer for '" + name + "'");
  if (capacity < count) {
    fail(PDESERVE_BUFFER_TOO_SMALL, "pdeserve: output '" + name + "' of shape " + shape_text(shape) + " has " +
                                        std::to_string(count) + " elements; the buffer holds " +
                                        std::to_string(capacity));
  }
  if (caller_shape != nullptr && *caller_shape != shape) {
    fail(PDESERVE_SHAPE_MISMATCH, "pdeserve: output '" + name + "' has shape " + shape_text(shape) +
                                      "; the buffer has shape " + shape_text(*caller_shape));
  }
  if (count > 0) need(buffer, "buffer");
  const std::string& bytes = tensor.data();
  if (wire_size == 4 && out_size == 4) from_wire<float, float>(bytes, shape, count, layout, static_cast<float*>(buffer));
  if (wire_size == 4 && out_size == 8) from_wire<float, double>(bytes, shape, count, layout, static_cast<double*>(buffer));
  if (wire_size == 8 && out_size == 4) from_wire<double, float>(bytes, shape, count, layout, static_cast<float*>(buffer));
  if (wire_size == 8 && out_size == 8) from_wire<double, double>(bytes, shape, count, layout, static_cast<double*>(buffer));
}

const pb::Tensor& field(const google::protobuf::Map<std::string, pb::Tensor>& fields, const char* name,
                        const char* kind) {
  need(name, "name");
  const auto found = fields.find(name);
  if (found == fields.end()) {
    std::vector<std::string> names;
    for (const auto& entry : fields) names.push_back("'" + entry.first + "'");
    std::sort(names.begin(), names.end());
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    fail(PDESERVE_NO_SUCH_FIELD, std::string("pdeserve: the answer has no ") + kind + " '" + name +
                                     "'; it has: " + (list.empty() ? "none" : list));
  }
  return found->second;
}

}  // namespace

// ---- exported functions -------------------------------------------------------------------------------

extern "C" {

int pdeserve_abi_version(void) { return PDESERVE_ABI_VERSION; }

const char* pdeserve_status_name(int status) {
  if (status >= 0 && status <= 16) return kStatusNames[status];
  if (status >= PDESERVE_BUFFER_TOO_SMALL && status <= PDESERVE_CLIENT_FAILURE) {
    return kLibraryStatusNames[status - PDESERVE_BUFFER_TOO_SMALL];
  }
  return "UNKNOWN_STATUS";
}

pdeserve_options* pdeserve_options_new(void) { return new (std::nothrow) pdeserve_options(); }

void pdeserve_options_free(pdeserve_options* options) { delete options; }

int pdeserve_options_set_token(pdeserve_options* options, const char* token, pdeserve_error* err) {
  return guarded(err, [&] { need(options, "options")->token = text(token); });
}

int pdeserve_options_set_tls(pdeserve_options* options, const char* root_certificates_pem, pdeserve_error* err) {
  return guarded(err, [&] {
    need(options, "options")->tls = true;
    options->root_certificates = text(root_certificates_pem);
  });
}

int pdeserve_options_set_deadline(pdeserve_options* options, double seconds, pdeserve_error* err) {
  return guarded(err, [&] {
    need(options, "options");
    if (!(seconds > 0) || !(seconds <= 1e7)) {
      fail(PDESERVE_BAD_ARGUMENT, "pdeserve: the deadline must be a number of seconds in (0, 1e7], got " +
                                      std::to_string(seconds));
    }
    options->deadline_s = seconds;
  });
}

int pdeserve_options_set_retries(pdeserve_options* options, int retries, pdeserve_error* err) {
  return guarded(err, [&] {
    need(options, "options");
    if (retries < 0 || retries > 20) {
      fail(PDESERVE_BAD_ARGUMENT, "pdeserve: retries must be 0 to 20, got " + std::to_string(retries));
    }
    options->retries = retries;
  });
}

int pdeserve_options_set_application(pdeserve_options* options, const char* application, pdeserve_error* err) {
  return guarded(err, [&] { need(options, "options")->application = text(application); });
}

int pdeserve_client_open(const char* target, const pdeserve_options* options, pdeserve_client** client,
                         pdeserve_error* err) {
  if (client != nullptr) *client = nullptr;
  return guarded(err, [&] {
    need(client, "client");
    const std::string where = text(need(target, "target"));
    if (where.empty()) fail(PDESERVE_BAD_ARGUMENT, "pdeserve: the target is empty; expected HOST:PORT");
    auto connection = std::make_shared<Connection>();
    if (options != nullptr) connection->options = *options;
    grpc::ChannelArguments arguments;
    arguments.SetMaxSendMessageSize(1 << 30);
    arguments.SetMaxReceiveMessageSize(1 << 30);
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    if (connection->options.tls) {
      grpc::SslCredentialsOptions ssl;
      ssl.pem_root_certs = connection->options.root_certificates;
      credentials = grpc::SslCredentials(ssl);
    } else {
      credentials = grpc::InsecureChannelCredentials();
    }
    connection->channel = grpc::CreateCustomChannel(where, credentials, arguments);
    if (!connection->channel) fail(PDESERVE_CLIENT_FAILURE, "pdeserve: could not create a channel to " + where);
    connection->stub = pb::Solver::NewStub(connection->channel);
    *client = new pdeserve_client{std::move(connection)};
  });
}

void pdeserve_client_close(pdeserve_client* client) { delete client; }

int pdeserve_request_new(const char* model, const char* version, pdeserve_request** request,
                         pdeserve_error* err) {
  if (request != nullptr) *request = nullptr;
  return guarded(err, [&] {
    need(request, "request");
    auto made = std::make_unique<pdeserve_request>();
    made->solve.set_model(text(need(model, "model")));
    made->solve.set_version(text(version));
    *request = made.release();
  });
}

void pdeserve_request_free(pdeserve_request* request) { delete request; }

int pdeserve_request_add_input(pdeserve_request* request, const char* name, pdeserve_dtype dtype,
                               pdeserve_layout layout, const void* data, int rank, const int64_t* shape,
                               pdeserve_error* err) {
  return guarded(err, [&] {
    need(request, "request");
    const std::string field_name = text(need(name, "name"));
    const size_t size = itemsize(dtype);
    check_layout(layout);
    const std::vector<int64_t> dims = shape_of(rank, shape, "input '" + field_name + "'");
    const size_t count = element_count(dims, "input '" + field_name + "'");
    if (count > 0) need(data, "data");
    pb::Tensor tensor;
    for (int64_t d : dims) tensor.add_shape(d);
    if (size == 4) {
      tensor.set_dtype(pb::DTYPE_FLOAT32);
      tensor.set_data(to_wire(static_cast<const float*>(data), dims, count, layout));
    } else {
      tensor.set_dtype(pb::DTYPE_FLOAT64);
      tensor.set_data(to_wire(static_cast<const double*>(data), dims, count, layout));
    }
    (*request->solve.mutable_inputs())[field_name] = std::move(tensor);
  });
}

int pdeserve_request_set_reference(pdeserve_request* request, int reference, pdeserve_error* err) {
  return guarded(err, [&] { need(request, "request")->solve.set_reference(reference != 0); });
}

int pdeserve_request_set_tolerance(pdeserve_request* request, double tolerance, pdeserve_error* err) {
  // the server checks the range (INVALID_ARGUMENT with its message), as for any other client
  return guarded(err, [&] { need(request, "request")->solve.set_tolerance(tolerance); });
}

int pdeserve_has_max_error(void) {
#ifdef PDESERVE_PROTO_HAS_MAX_ERROR
  return 1;
#else
  return 0;
#endif
}

int pdeserve_request_set_max_error(pdeserve_request* request, double max_error, pdeserve_error* err) {
  return guarded(err, [&] {
    need(request, "request");
#ifdef PDESERVE_PROTO_HAS_MAX_ERROR
    request->solve.set_max_error(max_error);
#else
    (void)max_error;
    fail(PDESERVE_NOT_SUPPORTED,
         "pdeserve: this library was built from a solver.proto without SolveRequest.max_error; rebuild it "
         "from a newer protos/src");
#endif
  });
}

int pdeserve_request_set_method(pdeserve_request* request, int method, pdeserve_error* err) {
  return guarded(err, [&] {
    need(request, "request");
    if (method < PDESERVE_METHOD_AUTO || method > PDESERVE_METHOD_CLASSICAL) {
      fail(PDESERVE_BAD_ARGUMENT, "pdeserve: method must be PDESERVE_METHOD_AUTO (0), _SURROGATE (1) or "
                                  "_CLASSICAL (2), got " + std::to_string(method));
    }
#ifdef PDESERVE_PROTO_HAS_MAX_ERROR
    request->solve.set_method(static_cast<pb::SolveMethod>(method));
#else
    fail(PDESERVE_NOT_SUPPORTED,
         "pdeserve: this library was built from a solver.proto without SolveRequest.method; rebuild it "
         "from a newer protos/src");
#endif
  });
}

int pdeserve_solve(pdeserve_client* client, const pdeserve_request* request, pdeserve_answer** answer,
                   pdeserve_error* err) {
  if (answer != nullptr) *answer = nullptr;
  return guarded(err, [&] {
    need(client, "client");
    need(request, "request");
    need(answer, "answer");
    auto made = std::make_unique<pdeserve_answer>();
    client->connection->call(&pb::Solver::Stub::Solve, request->solve, &made->solve,
                             "Solve(" + request->solve.model() + ")");
    made->index();
    *answer = made.release();
  });
}

void pdeserve_answer_free(pdeserve_answer* answer) { delete answer; }

const char* pdeserve_answer_version(const pdeserve_answer* answer) {
  if (answer == nullptr) return nullptr;
  return answer->is_step ? answer->step.version().c_str() : answer->solve.version().c_str();
}

int pdeserve_answer_num_outputs(const pdeserve_answer* answer) {
  return answer == nullptr ? 0 : static_cast<int>(answer->output_names.size());
}

const char* pdeserve_answer_output_name(const pdeserve_answer* answer, int index) {
  if (answer == nullptr || index < 0 || index >= static_cast<int>(answer->output_names.size())) return nullptr;
  return answer->output_names[static_cast<size_t>(index)].c_str();
}

int pdeserve_answer_output_shape(const pdeserve_answer* answer, const char* name, int max_rank, int64_t* shape,
                                 int* rank, pdeserve_dtype* dtype, pdeserve_error* err) {
  return guarded(err, [&] {
    const pb::Tensor& tensor = field(need(answer, "answer")->outputs(), name, "output");
    const int r = tensor.shape_size();
    if (r > max_rank) {
      fail(PDESERVE_BUFFER_TOO_SMALL, std::string("pdeserve: output '") + name + "' has rank " +
                                          std::to_string(r) + "; the shape array holds " + std::to_string(max_rank));
    }
    if (r > 0) need(shape, "shape");
    for (int k = 0; k < r; ++k) shape[k] = tensor.shape(k);
    if (rank != nullptr) *rank = r;
    if (dtype != nullptr) *dtype = tensor.dtype() == pb::DTYPE_FLOAT64 ? PDESERVE_FLOAT64 : PDESERVE_FLOAT32;
  });
}

int pdeserve_answer_output(const pdeserve_answer* answer, const char* name, pdeserve_dtype dtype,
                           pdeserve_layout layout, void* buffer, size_t capacity, pdeserve_error* err) {
  return guarded(err, [&] {
    copy_out(field(need(answer, "answer")->outputs(), name, "output"), name, dtype, layout, buffer, capacity,
             nullptr);
  });
}

int pdeserve_answer_output_shaped(const pdeserve_answer* answer, const char* name, pdeserve_dtype dtype,
                                  pdeserve_layout layout, void* buffer, int rank, const int64_t* shape,
                                  pdeserve_error* err) {
  return guarded(err, [&] {
    const pb::Tensor& tensor = field(need(answer, "answer")->outputs(), name, "output");
    const std::vector<int64_t> dims = shape_of(rank, shape, "the buffer");
    copy_out(tensor, name, dtype, layout, buffer, 0, &dims);
  });
}

int pdeserve_answer_reference_output(const pdeserve_answer* answer, const char* name, pdeserve_dtype dtype,
                                     pdeserve_layout layout, void* buffer, int rank, const int64_t* shape,
                                     pdeserve_error* err) {
  return guarded(err, [&] {
    need(answer, "answer");
    const pb::Tensor& tensor = field(answer->solve.reference_outputs(), name, "reference output");
    const std::vector<int64_t> dims = shape_of(rank, shape, "the buffer");
    copy_out(tensor, name, dtype, layout, buffer, 0, &dims);
  });
}

int pdeserve_answer_reference_relative_l2(const pdeserve_answer* answer, const char* name, double* value,
                                          pdeserve_error* err) {
  return guarded(err, [&] {
    need(answer, "answer");
    need(name, "name");
    const auto& errors = answer->solve.reference_relative_l2();
    const auto found = errors.find(name);
    if (found == errors.end()) {
      fail(PDESERVE_NO_SUCH_FIELD, std::string("pdeserve: the answer has no reference error for '") + name +
                                       "' (was reference set on the request?)");
    }
    *need(value, "value") = found->second;
  });
}

double pdeserve_answer_inference_ms(const pdeserve_answer* answer) {
  return answer == nullptr ? 0.0 : answer->solve.inference_ms();
}

int pdeserve_answer_grid_validated(const pdeserve_answer* answer) {
  return answer != nullptr && answer->solve.grid_validated() ? 1 : 0;
}

int pdeserve_answer_num_out_of_range_inputs(const pdeserve_answer* answer) {
  return answer == nullptr ? 0 : answer->solve.out_of_range_inputs_size();
}

const char* pdeserve_answer_out_of_range_input(const pdeserve_answer* answer, int index) {
  if (answer == nullptr || index < 0 || index >= answer->solve.out_of_range_inputs_size()) return nullptr;
  return answer->solve.out_of_range_inputs(index).c_str();
}

int pdeserve_answer_num_checks(const pdeserve_answer* answer) {
  return answer == nullptr ? 0 : answer->checks().size();
}

int pdeserve_answer_check(const pdeserve_answer* answer, int index, pdeserve_check* check, pdeserve_error* err) {
  return guarded(err, [&] {
    const auto& checks = need(answer, "answer")->checks();
    need(check, "check");
    if (index < 0 || index >= checks.size()) {
      fail(PDESERVE_NO_SUCH_FIELD, "pdeserve: no check " + std::to_string(index) + "; the answer has " +
                                       std::to_string(checks.size()) + " (indices from 0)");
    }
    const pb::AnswerCheck& c = checks.Get(index);
    pdeserve_check out{};
    out.has_estimate = c.has_estimated_relative_l2() ? 1 : 0;
    out.estimated_relative_l2 = c.has_estimated_relative_l2() ? c.estimated_relative_l2() : 0.0;
    out.has_indicator = c.has_indicator() ? 1 : 0;
    out.indicator = c.has_indicator() ? c.indicator() : 0.0;
    out.coverage = c.coverage();
    out.has_residual = c.has_residual() ? 1 : 0;
    out.residual = c.has_residual() ? c.residual() : 0.0;
    out.refine_ms = c.refine_ms();
#ifdef PDESERVE_PROTO_HAS_MAX_ERROR
    out.predicted_ms = c.predicted_ms();
    out.measured_ms = c.measured_ms();
#endif
    out.path = static_cast<int32_t>(c.path());
    out.refine_iterations = c.refine_iterations();
    out.estimate_method = static_cast<int32_t>(c.estimate_method());
    out.num_out_of_distribution = c.out_of_distribution_size();
    *check = out;
  });
}

const char* pdeserve_answer_check_out_of_distribution(const pdeserve_answer* answer, int index, int reason) {
  if (answer == nullptr || index < 0 || index >= answer->checks().size()) return nullptr;
  const pb::AnswerCheck& c = answer->checks().Get(index);
  if (reason < 0 || reason >= c.out_of_distribution_size()) return nullptr;
  return c.out_of_distribution(reason).c_str();
}

const char* pdeserve_answer_check_rung(const pdeserve_answer* answer, int index) {
  if (answer == nullptr || index < 0 || index >= answer->checks().size()) return nullptr;
#ifdef PDESERVE_PROTO_HAS_MAX_ERROR
  return answer->checks().Get(index).rung().c_str();
#else
  return "";
#endif
}

int pdeserve_rollout_start(pdeserve_client* client, const pdeserve_request* request, int steps,
                           double max_estimated_error, pdeserve_rollout** rollout, pdeserve_error* err) {
  if (rollout != nullptr) *rollout = nullptr;
  return guarded(err, [&] {
    need(client, "client");
    need(request, "request");
    need(rollout, "rollout");
    pb::RolloutRequest message;
    message.set_model(request->solve.model());
    message.set_version(request->solve.version());
    *message.mutable_inputs() = request->solve.inputs();
    message.set_steps(steps);
    message.set_max_estimated_error(max_estimated_error);
    auto made = std::make_unique<pdeserve_rollout>();
    made->connection = client->connection;
    made->context = std::make_unique<grpc::ClientContext>();
    made->connection->prepare(*made->context);
    made->what = "Rollout(" + message.model() + ")";
    made->reader = made->connection->stub->Rollout(made->context.get(), message);
    if (!made->reader) fail(PDESERVE_CLIENT_FAILURE, "pdeserve: could not start " + made->what);
    *rollout = made.release();
  });
}

int pdeserve_rollout_next(pdeserve_rollout* rollout, pdeserve_answer** step, pdeserve_error* err) {
  if (step != nullptr) *step = nullptr;
  return guarded(err, [&] {
    need(rollout, "rollout");
    need(step, "step");
    if (rollout->ended) return;
    auto made = std::make_unique<pdeserve_answer>();
    made->is_step = true;
    if (rollout->reader->Read(&made->step)) {
      made->index();
      *step = made.release();
      return;
    }
    rollout->ended = true;
    const grpc::Status status = rollout->reader->Finish();
    if (!status.ok()) fail_rpc(status, rollout->what);
  });
}

void pdeserve_rollout_close(pdeserve_rollout* rollout) {
  if (rollout == nullptr) return;
  try {
    if (!rollout->ended) {
      rollout->context->TryCancel();
      pb::RolloutStep discard;
      while (rollout->reader->Read(&discard)) {
      }
      rollout->reader->Finish();
    }
  } catch (...) {  // closing never fails
  }
  delete rollout;
}

int pdeserve_answer_step(const pdeserve_answer* answer) {
  return answer != nullptr && answer->is_step ? answer->step.step() : -1;
}

int pdeserve_answer_time(const pdeserve_answer* answer, double* time) {
  if (answer == nullptr || !answer->is_step || !answer->step.has_time()) return 0;
  if (time != nullptr) *time = answer->step.time();
  return 1;
}

int pdeserve_get_model(pdeserve_client* client, const char* name, const char* version, pdeserve_model** model,
                       pdeserve_error* err) {
  if (model != nullptr) *model = nullptr;
  return guarded(err, [&] {
    need(client, "client");
    need(model, "model");
    pb::GetModelRequest request;
    request.set_name(text(need(name, "name")));
    request.set_version(text(version));
    auto made = std::make_unique<pdeserve_model>();
    client->connection->call(&pb::Solver::Stub::GetModel, request, &made->info,
                             "GetModel(" + request.name() + ")");
    for (const auto& entry : made->info.metrics()) made->metrics.emplace_back(entry.first, entry.second);
    std::sort(made->metrics.begin(), made->metrics.end());
    *model = made.release();
  });
}

void pdeserve_model_free(pdeserve_model* model) { delete model; }

const char* pdeserve_model_string(const pdeserve_model* model, const char* key) {
  if (model == nullptr || key == nullptr) return nullptr;
  const pb::ModelInfo& m = model->info;
  const std::string k = key;
  if (k == "name") return m.name().c_str();
  if (k == "version") return m.version().c_str();
  if (k == "architecture") return m.architecture().c_str();
  if (k == "pde") return m.pde().c_str();
  if (k == "pde_parameters_json") return m.pde_parameters_json().c_str();
  if (k == "dataset_fingerprint") return m.dataset_fingerprint().c_str();
  if (k == "created_at") return m.created_at().c_str();
  if (k == "error_indicator") return m.error_indicator().c_str();
  if (k == "solver_unavailable_reason") return m.solver_unavailable_reason().c_str();
  return nullptr;
}

int pdeserve_model_number(const pdeserve_model* model, const char* key, double* value, pdeserve_error* err) {
  return guarded(err, [&] {
    const pb::ModelInfo& m = need(model, "model")->info;
    const std::string k = text(need(key, "key"));
    double v = 0;
    if (k == "min_resolution") v = static_cast<double>(m.min_resolution());
    else if (k == "max_resolution") v = static_cast<double>(m.max_resolution());
    else if (k == "resolution_multiple") v = static_cast<double>(m.resolution_multiple());
    else if (k == "parameter_count") v = static_cast<double>(m.parameter_count());
    else if (k == "validated_min_side") v = static_cast<double>(m.validated_min_side());
    else if (k == "validated_max_side") v = static_cast<double>(m.validated_max_side());
    else if (k == "validation_max_factor") v = m.validation_max_factor();
    else if (k == "estimate_coverage") v = m.estimate_coverage();
    else if (k == "calibration_samples") v = static_cast<double>(m.calibration_samples());
    else if (k == "rollout_calibrated_passes") v = m.rollout_calibrated_passes();
    else if (k == "has_solver") v = m.has_solver() ? 1.0 : 0.0;
    else if (k == "num_versions") v = m.versions_size();
    else fail(PDESERVE_BAD_ARGUMENT, "pdeserve: no number '" + k + "' in a model description");
    *need(value, "value") = v;
  });
}

int pdeserve_model_num_fields(const pdeserve_model* model, int kind) {
  if (model == nullptr) return 0;
  if (kind == 0) return model->info.inputs_size();
  if (kind == 1) return model->info.outputs_size();
  return 0;
}

int pdeserve_model_field(const pdeserve_model* model, int kind, int index, const char** name, int max_rank,
                         int64_t* shape, int* rank, pdeserve_dtype* dtype, pdeserve_error* err) {
  return guarded(err, [&] {
    need(model, "model");
    if (kind != 0 && kind != 1) fail(PDESERVE_BAD_ARGUMENT, "pdeserve: kind must be 0 (inputs) or 1 (outputs)");
    const auto& fields = kind == 0 ? model->info.inputs() : model->info.outputs();
    if (index < 0 || index >= fields.size()) {
      fail(PDESERVE_NO_SUCH_FIELD, "pdeserve: no field " + std::to_string(index) + "; the model has " +
                                       std::to_string(fields.size()) + (kind == 0 ? " inputs" : " outputs"));
    }
    const pb::FieldSpec& f = fields.Get(index);
    if (f.shape_size() > max_rank) {
      fail(PDESERVE_BUFFER_TOO_SMALL, "pdeserve: field '" + f.name() + "' has rank " +
                                          std::to_string(f.shape_size()) + "; the shape array holds " +
                                          std::to_string(max_rank));
    }
    if (f.shape_size() > 0) need(shape, "shape");
    for (int k = 0; k < f.shape_size(); ++k) shape[k] = f.shape(k);
    if (name != nullptr) *name = f.name().c_str();
    if (rank != nullptr) *rank = f.shape_size();
    if (dtype != nullptr) *dtype = f.dtype() == pb::DTYPE_FLOAT64 ? PDESERVE_FLOAT64 : PDESERVE_FLOAT32;
  });
}

int pdeserve_model_num_metrics(const pdeserve_model* model) {
  return model == nullptr ? 0 : static_cast<int>(model->metrics.size());
}

int pdeserve_model_metric(const pdeserve_model* model, int index, const char** name, double* value,
                          pdeserve_error* err) {
  return guarded(err, [&] {
    need(model, "model");
    if (index < 0 || index >= static_cast<int>(model->metrics.size())) {
      fail(PDESERVE_NO_SUCH_FIELD, "pdeserve: no metric " + std::to_string(index) + "; the model has " +
                                       std::to_string(model->metrics.size()));
    }
    const auto& entry = model->metrics[static_cast<size_t>(index)];
    if (name != nullptr) *name = entry.first.c_str();
    if (value != nullptr) *value = entry.second;
  });
}

int pdeserve_model_metric_by_name(const pdeserve_model* model, const char* name, double* value,
                                  pdeserve_error* err) {
  return guarded(err, [&] {
    const auto& metrics = need(model, "model")->info.metrics();
    const auto found = metrics.find(text(need(name, "name")));
    if (found == metrics.end()) {
      fail(PDESERVE_NO_SUCH_FIELD, std::string("pdeserve: the model card has no metric '") + name + "'");
    }
    *need(value, "value") = found->second;
  });
}

}  // extern "C"
