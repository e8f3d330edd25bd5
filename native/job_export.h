// Sync + Promise exports of one job from one parser, shared by the linear-algebra exports
// (native/linalg.cc) and their CUDA twins (native/linalg_cuda.cc). The parser runs on the
// main thread and returns a JobCall: a plain job struct whose Run() may throw WorkError,
// the value the call returns (built before the run; it holds the output arrays), and the
// inputs read in place, which a Promise run pins. `name` runs the job on the calling
// thread; `nameAsync` on the libuv pool. A job with a `Finish(Napi::Object result)` member
// adds what only the run knows (e.g. its timing) to the result on the main thread.
#pragma once
#include <napi.h>

#include <initializer_list>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "common.h"

namespace g2m {

template <class Job>
struct JobCall {
  Job job;
  Napi::Value result;
  std::vector<Napi::Value> inputs;
};

// A new object with these properties, in this order.
inline Napi::Object NamedValues(Napi::Env env, std::initializer_list<std::pair<const char*, Napi::Value>> props) {
  auto o = Napi::Object::New(env);
  for (const auto& p : props) o.Set(p.first, p.second);
  return o;
}

namespace jobexport {

template <class Job, class = void>
struct HasFinish : std::false_type {};
template <class Job>
struct HasFinish<Job, std::void_t<decltype(std::declval<const Job&>().Finish(std::declval<Napi::Object>()))>>
    : std::true_type {};

template <class Job>
Napi::Value Finished(const Job& job, const Napi::Value& result) {
  if constexpr (HasFinish<Job>::value) job.Finish(result.As<Napi::Object>());
  return result;
}

template <class Job>
class Worker final : public PromiseWorker {
 public:
  Worker(Napi::Env env, JobCall<Job>&& call) : PromiseWorker(env), job_(std::move(call.job)) {
    if (call.result.IsObject()) result_ = Napi::Persistent(call.result.template As<Napi::Object>());
    for (const auto& v : call.inputs) Keep(v);
  }

 protected:
  void Run() override { job_.Run(); }
  Napi::Value Result(Napi::Env env) override {
    return result_.IsEmpty() ? env.Undefined() : Finished(job_, result_.Value());
  }

 private:
  Job job_;
  Napi::ObjectReference result_;
};

template <class Job, JobCall<Job> (*Parse)(const Napi::CallbackInfo&)>
Napi::Value Sync(const Napi::CallbackInfo& info) {
  JobCall<Job> c = Parse(info);
  try {
    c.job.Run();
  } catch (const WorkError& e) {
    throw MakeError(info.Env(), e);
  } catch (const std::bad_alloc&) {
    ThrowError(info.Env(), "ERR_OUT_OF_MEMORY", "out of memory");
  }
  return Finished(c.job, c.result);
}

template <class Job, JobCall<Job> (*Parse)(const Napi::CallbackInfo&)>
Napi::Value Async(const Napi::CallbackInfo& info) {
  return (new Worker<Job>(info.Env(), Parse(info)))->Start();
}

}  // namespace jobexport

// Sets `name` (sync) and `nameAsync` (Promise) on `target`.
template <class Job, JobCall<Job> (*Parse)(const Napi::CallbackInfo&)>
void RegisterJob(Napi::Env env, Napi::Object target, const std::string& name) {
  target.Set(name, Napi::Function::New(env, jobexport::Sync<Job, Parse>, name));
  target.Set(name + "Async", Napi::Function::New(env, jobexport::Async<Job, Parse>, name + "Async"));
}

}  // namespace g2m
