// Facts about the CUDA device, as both CUDA modules report them (the conversion's
// cuconv::Facts and the decode kernels' cudadec::GetDeviceInfo). Plain C++, so that the
// Node bindings compile with the host compiler alone.
#pragma once
#include <cstddef>
#include <string>

namespace g2m {

struct DeviceFacts {
  std::string name;
  int sm_count = 0;
  int cc_major = 0, cc_minor = 0;
  size_t total_mem = 0;
  size_t l2_bytes = 0;  // filled by cudadec::GetDeviceInfo only
  int runtime_version = 0, driver_version = 0;
};

}  // namespace g2m
