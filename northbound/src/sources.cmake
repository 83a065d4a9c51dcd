# qkdn_northbound: HTTP server (Beast), REST API (Boost.JSON, Boost.URL), /metrics.
add_library(qkdn_northbound STATIC
  src/http_server.cpp
  src/api_server.cpp
)
target_include_directories(qkdn_northbound PUBLIC include)
target_link_libraries(qkdn_northbound
  PUBLIC qkdn_service qkdn_core Boost::headers OpenSSL::SSL Threads::Threads
  PRIVATE Boost::json Boost::url OpenSSL::Crypto qkdn_options)
