# controller/service: the service layer (core on a strand, Ck server and sessions) and the daemon.
add_library(qkdn_service STATIC
  service/src/controller_service.cpp
)
target_include_directories(qkdn_service PUBLIC service/include)
target_link_libraries(qkdn_service PUBLIC qkdn_core qkdn_southbound_net PRIVATE qkdn_options)

add_executable(qkdn-controller main/main.cpp)
target_link_libraries(qkdn-controller PRIVATE qkdn_service qkdn_options)
